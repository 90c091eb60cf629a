export * from './packet';
export * from './pcap';
