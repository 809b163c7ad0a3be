"""The official Judge0 Python SDK (PyPI `judge0`) against Kiln, unchanged but for its endpoint
(JUDGE0_CE_ENDPOINT and JUDGE0_CE_AUTH_HEADERS). Each part prints "<part> ok" when it holds.

The SDK treats any str that decodes as base64 as base64 (a plain "kiln" arrives as b"\x92)g"),
against Kiln as against Judge0: inputs here are not valid base64 on purpose."""
import judge0
from judge0 import File, Filesystem, Submission, TestCase

# judge0.run: one program, stdin in, stdout and status out.
r = judge0.run(source_code="print(input()[::-1])", stdin="Kiln!", language=judge0.PYTHON)
assert r.status == judge0.Status.ACCEPTED, r.status
assert r.stdout == "!nliK\n", repr(r.stdout)
assert float(r.time) >= 0 and r.memory > 0
print("run ok")

# Test cases with expected output: one passes, one fails.
results = judge0.run(
    source_code="x = int(input())\nprint(x * x)",
    language=judge0.PYTHON,
    test_cases=[TestCase(input="2", expected_output="4"), TestCase(input="3", expected_output="10")],
)
assert [s.status for s in results] == [judge0.Status.ACCEPTED, judge0.Status.WRONG_ANSWER], results
assert results[1].stdout == "9\n"
print("test cases ok")

# A batch, created at once and waited for: C and JavaScript (Flavor.CE aliases).
subs = [
    Submission(source_code='#include <stdio.h>\nint main(void) { puts("c!"); return 0; }', language=judge0.C),
    Submission(source_code="console.log('js!')", language=judge0.JAVASCRIPT),
    Submission(source_code="int main( {", language=judge0.CPP),
]
done = judge0.wait(submissions=judge0.async_run(submissions=subs))
assert [s.stdout for s in done[:2]] == ["c!\n", "js!\n"], [s.stdout for s in done]
assert done[2].status == judge0.Status.COMPILATION_ERROR and "error" in done[2].compile_output
print("batch ok")

# A multi-file program: a compile script and a run script in the archive.
fs = Filesystem(content=[
    File(name="main.c", content='#include <stdio.h>\nint main(void) { puts("multi!"); return 0; }'),
    File(name="compile", content="gcc -o prog main.c"),
    File(name="run", content="./prog"),
])
m = judge0.run(submissions=Submission(source_code="", language=judge0.MULTI_FILE, additional_files=fs))
assert m.status == judge0.Status.ACCEPTED and m.stdout == "multi!\n", (m.status, m.stdout)
print("multi-file ok")

# The client read Kiln's languages and config when it was made.
client = judge0.clients.Client(
    __import__("os").environ["JUDGE0_CE_ENDPOINT"],
    __import__("json").loads(__import__("os").environ["JUDGE0_CE_AUTH_HEADERS"]),
)
assert client.version == "1.13.1"
assert client.is_language_supported(judge0.RUST) and client.get_language(71).name.startswith("Python")
assert client.config.enable_batched_submissions
print("languages ok")
