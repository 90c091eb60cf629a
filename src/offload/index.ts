export * from './abi';
export * from './errors';
export * from './native';
export * from './packet-burst';
export * from './shim';
export * from './mapping-records';
