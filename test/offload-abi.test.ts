// The koffi declarations must match the C compiler's layout of every struct
// that crosses the FFI boundary; otherwise calls corrupt memory silently.
import t from 'tap';
import koffi from 'koffi';
import { ABI_VERSION, abiConstants, abiStructs, loadNative, readAbiLayout } from '../src/offload';

const layout = readAbiLayout(loadNative());

t.equal(layout.version, ABI_VERSION, 'ABI version of the shim equals the binding');

t.same(Object.keys(layout.structs).sort(), Object.keys(abiStructs).sort(),
  'the binding declares exactly the structs the shim publishes');

for (const [name, c] of Object.entries(layout.structs)) {
  const type = abiStructs[name];
  if (!type) continue;
  t.test(name, async (t) => {
    t.equal(koffi.sizeof(type), c.size, `sizeof(${name})`);
    for (const [field, off] of Object.entries(c.fields)) {
      t.equal(koffi.offsetof(type, field), off, `offsetof(${name}, ${field})`);
    }
    const declared = Object.keys(koffi.type(type).members ?? {}).sort();
    t.same(declared, Object.keys(c.fields).sort(), `${name} has the same fields on both sides`);
  });
}

for (const [name, value] of Object.entries(layout.constants)) {
  t.equal(abiConstants[name], value, `constant ${name}`);
}
