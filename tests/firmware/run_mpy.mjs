// Runs Python on the real MicroPython VM (the npm WebAssembly port).
//   node run_mpy.mjs DIR[,DIR...] CODE [CODE ...]
// Every .py file of each DIR is copied into the VM's in-memory file system under /fw (all on
// sys.path); each CODE argument is then run by its own runPython call, so gc between calls
// sees a clean stack (see bench/firmware_heap.py). Exit status 1 on a Python exception.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const [dirs, ...codes] = process.argv.slice(2);
const mp = await loadMicroPython({
  heapsize: 4 * 1024 * 1024,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});
mp.FS.mkdirTree("/fw");
for (const dir of dirs.split(",")) {
  for (const name of readdirSync(dir)) {
    if (name.endsWith(".py")) mp.FS.writeFile(join("/fw", name), readFileSync(join(dir, name)));
  }
}
mp.runPython("import sys\nsys.path.insert(0, '/fw')");
try {
  for (const code of codes) mp.runPython(code);
} catch (error) {
  process.stderr.write(String(error) + "\n");
  process.exit(1);
}
