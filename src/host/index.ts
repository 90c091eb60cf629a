export * from './agent';
export * from './apps';
export * from './config';
export * from './create-host';
export * from './netsetup';
export * from './repair';
export * from './tunnel-filter';
export * from './app-check';
