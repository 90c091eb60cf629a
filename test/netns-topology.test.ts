// The test topology's names: a process killed before its teardown leaves its
// bridge and namespaces behind, named after its pid. A later test whose pid
// ends in the same four digits must not fail on them (nor remove them: the
// names are all it knows, not whether their owner still runs).
import t from 'tap';
import { isRoot } from './lib/harness';
import { Topology, sh } from './lib/netns';

const linkExists = (name: string) => sh('ip', ['link', 'show', name], { allowFail: true }) !== '';
const nsExists = (name: string) => sh('ip', ['netns', 'list']).split('\n').some((l) => l.split(' ')[0] === name);

if (!isRoot) {
  t.plan(0, 'needs root: network namespaces and bridges');
} else {
  t.test("a leftover topology with this pid's prefix is stepped over, not reused or removed", async (t) => {
    const stale = `hotz${process.pid % 10000}`;
    sh('ip', ['link', 'add', `${stale}br`, 'type', 'bridge']);
    sh('ip', ['netns', 'add', `handoff-${stale}-a`]);
    t.teardown(() => {
      sh('ip', ['netns', 'del', `handoff-${stale}-a`], { allowFail: true });
      sh('ip', ['link', 'del', `${stale}br`], { allowFail: true });
    });
    const topo = new Topology('z');
    t.teardown(() => topo.destroy());
    t.not(topo.prefix, stale, 'another prefix was taken');
    t.match(topo.prefix, /^hotz\d{1,4}$/, 'of the same shape (interface names stay within 15 bytes)');
    const a = topo.host('a', '198.18.7.1/24');
    const b = topo.host('b', '198.18.7.2/24');
    t.equal(a.ns, `handoff-${topo.prefix}-a`);
    for (const h of ['a', 'b']) {
      const [link] = JSON.parse(sh('ip', ['-j', 'link', 'show', `${topo.prefix}${h}`])) as { master?: string }[];
      t.equal(link?.master, topo.bridge, `host ${h}'s veth is on the new bridge, not the leftover`);
    }
    t.match(sh('ip', ['-br', 'addr', 'show', 'eth0'], { ns: b.ns }), /198\.18\.7\.2\/24/);
    topo.destroy();
    t.notOk(linkExists(`${topo.prefix}br`), 'its own bridge removed');
    t.notOk(nsExists(a.ns), 'its own namespaces removed');
    t.ok(linkExists(`${stale}br`) && nsExists(`handoff-${stale}-a`), 'the leftover is untouched');
  });
}
