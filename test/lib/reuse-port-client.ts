// Two HTTP requests from the same client port, one after the other, each on
// its own connection ended with a RST (so the client keeps no TIME_WAIT and
// may bind the port again at once). Run in a client namespace:
//
//   ip netns exec NS node dist/test/lib/reuse-port-client.js VIP PORT LOCAL_PORT
//
// Prints {"bodies":["served by host1\n", ...]} or {"error":"..."}.
import net from 'node:net';

const [host, port, localPort] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];

function get(): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, localPort });
    let got = '';
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`no answer; got ${JSON.stringify(got)}`)); }, 5000);
    s.setEncoding('utf8');
    s.on('data', (d) => {
      got += d;
      const body = /\r\n\r\n([\s\S]*\n)$/.exec(got);
      if (body) {
        clearTimeout(timer);
        s.resetAndDestroy();
        resolve(body[1]);
      }
    });
    s.on('error', (err) => { clearTimeout(timer); reject(err); });
    s.write(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  });
}

(async () => {
  const bodies: string[] = [];
  for (let i = 0; i < 2; i++) {
    bodies.push(await get());
    await new Promise((r) => setTimeout(r, 100));
  }
  process.stdout.write(`${JSON.stringify({ bodies })}\n`);
})().catch((err: Error) => process.stdout.write(`${JSON.stringify({ error: err.message })}\n`));
