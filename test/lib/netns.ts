// The namespace topology lives in src/controller/netns.ts (the demo builds the same one).
export * from '../../src/controller/netns';
