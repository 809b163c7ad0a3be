// The npm `piston-client` package's own README example against Kiln (PISTON_URL), plus its
// other calls: runtimes, a compiled language with the client's default args, a config object.
// Prints "<part> ok" for each part that holds.
import assert from "node:assert/strict";
import piston from "piston-client";

const client = piston({ server: process.env.PISTON_URL });

const runtimes = await client.runtimes();
assert.ok(Array.isArray(runtimes), JSON.stringify(runtimes));
assert.ok(runtimes.some((r) => r.language === "python" && r.aliases.includes("py")));
console.log("runtimes ok");

// The README's example, word for word.
const result = await client.execute("python", 'print("Hello World!")');
assert.equal(result.language, "python");
assert.equal(result.run.stdout, "Hello World!\n");
assert.equal(result.run.stderr, "");
assert.equal(result.run.code, 0);
assert.equal(result.run.signal, null);
assert.equal(result.run.output, "Hello World!\n");
console.log("readme example ok");

// The client sends args ["1", "2", "3"] unless told otherwise, and -1 memory limits.
const c = await client.execute(
  "c",
  '#include <stdio.h>\nint main(int argc, char **argv) { printf("%d %s\\n", argc - 1, argv[3]); return 4; }',
);
assert.equal(c.compile.code, 0, JSON.stringify(c));
assert.equal(c.run.stdout, "3 3\n");
assert.equal(c.run.code, 4);
console.log("compiled ok");

const js = await client.execute({
  language: "javascript",
  files: [{ name: "main.js", content: "process.stdin.on('data', d => console.log('got ' + d.toString().trim()))" }],
  stdin: "kiln",
  args: [],
  runTimeout: 5000,
});
assert.equal(js.run.stdout, "got kiln\n", JSON.stringify(js));
console.log("config object ok");

const unknown = await client.execute("no-such-language", "x");
assert.ok(unknown.message || unknown.success === false, JSON.stringify(unknown));
console.log("unknown language ok");
