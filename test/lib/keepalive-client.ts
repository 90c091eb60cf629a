// One keep-alive HTTP connection, driven from stdin (run in a client namespace):
//
//   ip netns exec NS node dist/test/lib/keepalive-client.js VIP PORT
//
// Each stdin line is a path; the request goes over the same TCP connection
// and one JSON line comes back: {"status":200,"body":"served by host2\n","localPort":N}
// or {"error":"..."} when the connection failed. Exits when stdin closes.
import http from 'node:http';
import readline from 'node:readline';

const [host, port] = [process.argv[2], Number(process.argv[3] ?? 80)];
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
let sockets = 0;
agent.on('free', () => { /* kept for the next request */ });

const rl = readline.createInterface({ input: process.stdin });
const queue: string[] = [];
let busy = false;

function next(): void {
  if (busy || !queue.length) return;
  busy = true;
  const path = queue.shift()!;
  const req = http.get({ host, port, path, agent, timeout: 5000 }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d) => { body += d; });
    res.on('end', () => {
      out({ status: res.statusCode, body, localPort: req.socket?.localPort, sockets });
      busy = false;
      next();
    });
  });
  req.on('socket', (s) => { if (!(s as unknown as { _handoffSeen?: boolean })._handoffSeen) { sockets++; (s as unknown as { _handoffSeen: boolean })._handoffSeen = true; } });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (err) => {
    out({ error: err.message });
    busy = false;
    next();
  });
}

rl.on('line', (line) => {
  queue.push(line.trim());
  next();
});
rl.on('close', () => {
  const wait = setInterval(() => {
    if (!busy && !queue.length) {
      clearInterval(wait);
      agent.destroy();
    }
  }, 20);
});
