export * from './classify';
export * from './engine';
export * from './flow-ids';
export * from './maglev';
export * from './parsers';
export * from './request-info';
export * from './router';
export * from './rules-schema';
