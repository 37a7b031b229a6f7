// Runs a wasm32-wasip1 command module under Node's built-in WASI (node:wasi), so benchmarking the wasm build needs
// no extra runtime. Usage: node scripts/bench-wasm.mjs path/to/module.wasm [args passed to the module...]
// Exits with the module's own exit code.
import { readFile } from 'node:fs/promises';
import { argv, exit, stderr } from 'node:process';
import { WASI } from 'node:wasi';

const [wasmPath, ...args] = argv.slice(2);
if (!wasmPath) {
  stderr.write('usage: node scripts/bench-wasm.mjs MODULE.wasm [ARGS...]\n');
  exit(2);
}

// No preopened directories and an empty environment: the benchmark needs only stdout, args and the clock.
const wasi = new WASI({ version: 'preview1', args: [wasmPath, ...args], env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(wasmPath));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
exit(wasi.start(instance));
