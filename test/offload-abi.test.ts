// The koffi declarations must match the C compiler's layout of every struct
// that crosses the FFI boundary; otherwise calls corrupt memory silently.
import t from 'tap';
import { checkAbiLayout } from './lib/abi-check';
import { ABI_VERSION, abiConstants, abiStructs, loadNative, readAbiLayout } from '../src/offload';

const layout = readAbiLayout(loadNative());

t.equal(layout.version, ABI_VERSION, 'ABI version of the shim equals the binding');

checkAbiLayout(t, 'the shim', layout, abiStructs, abiConstants);
