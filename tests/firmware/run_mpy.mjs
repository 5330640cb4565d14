// Runs Python on the real MicroPython VM (the npm WebAssembly port).
//   node run_mpy.mjs DIR[,DIR...] CODE [CODE ...]
// Every .py file of each DIR (and its subfolders) is copied into the VM's in-memory file system under /fw (all on
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
function copyTree(from, to) {
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      mp.FS.mkdirTree(join(to, entry.name));
      copyTree(join(from, entry.name), join(to, entry.name));
    } else if (entry.name.endsWith(".py")) {
      mp.FS.writeFile(join(to, entry.name), readFileSync(join(from, entry.name)));
    }
  }
}
for (const dir of dirs.split(",")) copyTree(dir, "/fw");
mp.runPython("import sys\nsys.path.insert(0, '/fw')");
try {
  for (const code of codes) mp.runPython(code);
} catch (error) {
  process.stderr.write(String(error) + "\n");
  process.exit(1);
}
