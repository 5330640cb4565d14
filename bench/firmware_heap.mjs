// Heap use of the firmware on the real MicroPython VM (npm WebAssembly port), for
// bench/firmware_heap.py. Every step is its own runPython call: only between calls does
// gc.collect() see a clean stack, so only there are the numbers meaningful.
//   node firmware_heap.mjs FIRMWARE_DIR FAKE_BOARD_DIR MESSAGES CHUNK
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const [firmwareDir, fakeDir, messages, chunk] = process.argv.slice(2);
const mp = await loadMicroPython({
  heapsize: 1024 * 1024,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});
mp.FS.mkdirTree("/fw/umqtt");
mp.FS.mkdirTree("/state");
for (const name of readdirSync(firmwareDir)) {
  if (name.endsWith(".py") && name !== "boot.py" && name !== "main.py") {
    mp.FS.writeFile(join("/fw", name), readFileSync(join(firmwareDir, name)));
  }
}
mp.FS.writeFile("/fw/fake_board.py", readFileSync(join(fakeDir, "fake_board.py")));
// Stand-ins for what the ESP32 image has built in (umqtt.simple is frozen there: flash, not heap).
mp.FS.writeFile("/fw/umqtt/__init__.py", "");
mp.FS.writeFile("/fw/umqtt/simple.py", "socket = None\nclass MQTTClient:\n    pass\n");
mp.FS.writeFile("/fw/machine.py", "class Pin:\n    OUT = IN = PULL_UP = PULL_DOWN = 0\n");
mp.FS.writeFile("/fw/network.py", "STA_IF = 0\n");

// The first collection after a call can still see objects that call left behind on the VM's
// stack (up to a few KB just after the setup); a second call measures what is really referenced.
const measure = (label) => {
  mp.runPython("import gc\ngc.collect()");
  mp.runPython(`gc.collect()\nprint("HEAP ${label}", gc.mem_alloc())`);
};

mp.runPython("import sys\nsys.path.insert(0, '/fw')");
measure("baseline");
const modules = "app, board, cabinet, config, contract, gameover, journal, link, pulser";
mp.runPython(`import ${modules}`);
measure("imported");
mp.runPython(`del ${modules}`);  // sys.modules keeps them, as on the board
// From here on the cabinet runs on tests/firmware/fake_board.py, which stands in for board.py: a
// board holds one of the two, so board.py leaves (fake_board.py, the larger, is counted instead),
// and with it the stand-ins for machine and network (C modules in the ESP32's flash, no heap).
mp.runPython("import sys\nfor name in ('board', 'machine', 'network'):\n    sys.modules.pop(name)");
mp.FS.writeFile("/state/config.json", JSON.stringify({
  machine_id: "machine_123", wifi: { ssid: "x" }, mqtt: { host: "h" },
  relay: { pulse_ms: 20, gap_ms: 20 }, gameover: { pin: 27 }, lockout: { pin: 25 },
}));
mp.runPython(`
import app
from fake_board import FakeBoard, FakeLink
bench_board = FakeBoard("/state", config_path="/state/config.json")
cfg = app.load_config(bench_board)  # as on the board: validates, then drops the config module
bench_link = FakeLink(bench_board, "/state/journal.dat")
bench_loop = app.Loop(bench_board, cfg, bench_link)
bench_link.bind(bench_loop.cabinet.on_message)
bench_sent = 0

def bench_chunk(n):
    global bench_sent
    topic = bench_loop.cabinet.coin_topic
    for _ in range(n):
        bench_sent += 1
        # A Stripe-sized id (66 characters), as the API sends them.
        payload = '{"machineId":"machine_123","credits":1,"id":"cs_live_%060d"}' % bench_sent
        bench_link.inbox.append([topic, payload.encode()])
        while bench_link.inbox or bench_loop.cabinet.journal.entries:
            bench_loop.step()
    # The fake board and broker keep a record for tests; a real board keeps none. New lists:
    # emptied ones would keep their grown capacity (~3.5 KB after 100 messages).
    bench_link.published = []
    bench_board.events = []
    bench_board.edges = []
    bench_link.durable_before_puback = []
`);
measure("cabinet ready");
// Chunks of CHUNK messages per runPython call; the heap is measured every 1,000 messages.
for (let done = 0; done < Number(messages); ) {
  mp.runPython(`bench_chunk(${chunk})`);
  done += Number(chunk);
  if (done % 1000 === 0) measure(`after ${done} messages`);
}
mp.runPython("print('PULSES', bench_sent, bench_loop.cabinet.journal.remembered)");
