// Addresses shared by the golden and data-path tests (RFC 2544 benchmarking range).
export const LB = { ip: '198.18.0.2', mac: '02:00:00:00:00:01' };
export const CLIENT = { ip: '198.18.0.1', mac: '02:00:00:00:00:aa' };
export const VIP = { ip: '198.18.0.100', port: 80 };
export const HOST1 = { ip: '198.18.0.11', nexthopMac: '02:00:00:00:01:11', innerMac: '02:00:00:00:0b:11' };
export const HOST2 = { ip: '198.18.0.12', nexthopMac: '02:00:00:00:01:12', innerMac: '02:00:00:00:0b:12' };
