// Blob transfer, shared by the balancer (BlobSender, encodeBlob) and the host
// agent (Reassembler, decodeBlob): design.md §4, claim steps C5, C7 and C9.
export * from './crc32c';
export * from './blob';
export * from './fragment';
export * from './reassembly';
export * from './sender';
export * from './owner-query';
