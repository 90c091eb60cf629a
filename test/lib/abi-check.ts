// One check of a native library's published layout (its *_abi_layout() JSON)
// against the koffi declarations of its binding: every struct on both sides,
// each size, offset and field, and each constant. Used by the shim's and the
// host library's ABI tests.
import type { Test } from 'tap';
import koffi, { type TypeObject } from 'koffi';

export interface AbiLayout {
  version: number;
  constants: Record<string, number>;
  structs: Record<string, { size: number; fields: Record<string, number> }>;
}

export function checkAbiLayout(t: Test, what: string, layout: AbiLayout, structs: Record<string, TypeObject>,
  constants: Record<string, number>): void {
  t.same(Object.keys(layout.structs).sort(), Object.keys(structs).sort(),
    `the binding declares exactly the structs ${what} publishes`);
  for (const [name, c] of Object.entries(layout.structs)) {
    const type = structs[name];
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
    t.equal(constants[name], value, `constant ${name}`);
  }
}
