//! Piston's interactive WebSocket, `/api/v2/connect`, against a real `kiln serve`: a program
//! answers each line of stdin before the next is sent, a compiled program too, a signal ends a
//! program that would run forever, and every protocol error closes with Piston's code.

use crate::server;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server::Server;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect(s: &Server) -> Ws {
    let url = s.url("/api/v2/connect").replacen("http://", "ws://", 1);
    let (ws, _) = tungstenite::connect(url).expect("the WebSocket opens");
    if let MaybeTlsStream::Plain(t) = ws.get_ref() {
        t.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    }
    ws
}

fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

/// The next JSON frame, or the close code and reason.
fn next(ws: &mut Ws) -> Result<Value, (u16, String)> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Message::Close(Some(f))) => return Err((f.code.into(), f.reason.to_string())),
            Ok(Message::Close(None)) => return Err((1005, String::new())),
            Ok(_) => {}
            Err(e) => return Err((0, e.to_string())),
        }
    }
}

/// Reads frames until one of `kind`; returns it and the stdout seen on the way.
fn until(ws: &mut Ws, kind: &str) -> (Value, String) {
    let mut out = String::new();
    loop {
        let v = next(ws).unwrap_or_else(|e| panic!("closed {e:?} before {kind}"));
        if v["type"] == "data" && v["stream"] == "stdout" {
            out.push_str(v["data"].as_str().unwrap());
        }
        if v["type"] == kind {
            return (v, out);
        }
    }
}

#[test]
fn a_program_answers_each_line_before_the_next_is_sent() {
    let s = Server::start("piston-ws", &[]);
    let mut ws = connect(&s);
    send(
        &mut ws,
        json!({"type": "init", "language": "python", "version": "*", "files": [{"content":
            "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\n    print('seen', file=sys.stderr, flush=True)\n"}]}),
    );
    let runtime = next(&mut ws).unwrap();
    assert_eq!(runtime["type"], "runtime");
    assert_eq!(runtime["language"], "python");
    let (stage, _) = until(&mut ws, "stage");
    assert_eq!(stage["stage"], "run");
    // Each answer arrives while the program still runs and waits for the next line.
    for word in ["hello", "kiln"] {
        send(
            &mut ws,
            json!({"type": "data", "stream": "stdin", "data": format!("{word}\n")}),
        );
        let (data, _) = until(&mut ws, "data");
        assert_eq!(data["data"], format!("{}\n", word.to_uppercase()), "{data}");
        assert_eq!(data["stream"], "stdout");
        let (err, _) = until(&mut ws, "data");
        assert_eq!(err["stream"], "stderr");
        assert_eq!(err["data"], "seen\n");
    }
    // The program is still reading: a signal ends it.
    send(&mut ws, json!({"type": "signal", "signal": "SIGKILL"}));
    let (exit, _) = until(&mut ws, "exit");
    assert_eq!(exit["signal"], "SIGKILL", "{exit}");
    assert_eq!(
        next(&mut ws).unwrap_err().0,
        4999,
        "closed as Job Completed"
    );
}

#[test]
fn a_compiled_program_runs_interactively_after_its_compile_stage() {
    let s = Server::start("piston-ws-c", &[]);
    let mut ws = connect(&s);
    send(
        &mut ws,
        json!({"type": "init", "language": "c", "version": "*", "files": [{"name": "main.c", "content":
            "#include <stdio.h>\nint main(void) { int x; while (scanf(\"%d\", &x) == 1) { if (x == 0) return 3; printf(\"%d\\n\", x * 2); fflush(stdout); } return 0; }"}]}),
    );
    let (stage, _) = until(&mut ws, "stage");
    assert_eq!(stage["stage"], "compile");
    send(
        &mut ws,
        json!({"type": "data", "stream": "stdin", "data": "21\n"}),
    );
    let (data, _) = until(&mut ws, "data");
    assert_eq!(data["data"], "42\n");
    send(
        &mut ws,
        json!({"type": "data", "stream": "stdin", "data": "0\n"}),
    );
    let (exit, _) = until(&mut ws, "exit");
    assert_eq!(exit["stage"], "run");
    assert_eq!(exit["code"], 3, "{exit}");

    // A compile error ends in the compile stage with the compiler's words.
    let mut ws = connect(&s);
    send(
        &mut ws,
        json!({"type": "init", "language": "c", "version": "*", "files": [{"content": "int main( {"}]}),
    );
    let mut words = String::new();
    let exit = loop {
        let v = next(&mut ws).unwrap();
        if v["type"] == "data" {
            words.push_str(v["data"].as_str().unwrap());
        }
        if v["type"] == "exit" {
            break v;
        }
    };
    assert_eq!(exit["stage"], "compile", "{exit}");
    assert!(words.contains("error"), "{words}");
}

#[test]
fn protocol_errors_close_with_pistons_codes() {
    let s = Server::start("piston-ws-errors", &[]);
    // Data before init.
    let mut ws = connect(&s);
    send(
        &mut ws,
        json!({"type": "data", "stream": "stdin", "data": "x"}),
    );
    assert_eq!(next(&mut ws).unwrap_err().0, 4003);
    // No init within a second.
    let mut ws = connect(&s);
    let t = Instant::now();
    assert_eq!(next(&mut ws).unwrap_err().0, 4001);
    assert!(t.elapsed() < Duration::from_secs(10));
    // An unknown runtime is an error message, then 4002.
    let mut ws = connect(&s);
    send(
        &mut ws,
        json!({"type": "init", "language": "cobra", "version": "*", "files": [{"content": "x"}]}),
    );
    let e = next(&mut ws).unwrap();
    assert_eq!(e["type"], "error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("cobra-* runtime is unknown"),
        "{e}"
    );
    assert_eq!(next(&mut ws).unwrap_err().0, 4002);
    // Init twice, writing to stdout, a signal that is not one.
    let program = json!({"type": "init", "language": "python", "version": "*", "files": [{"content": "import time\ntime.sleep(30)"}]});
    for (second, code) in [
        (program.clone(), 4000),
        (
            json!({"type": "data", "stream": "stdout", "data": "x"}),
            4004,
        ),
        (json!({"type": "signal", "signal": "SIGNOPE"}), 4005),
    ] {
        let mut ws = connect(&s);
        send(&mut ws, program.clone());
        assert_eq!(next(&mut ws).unwrap()["type"], "runtime");
        send(&mut ws, second);
        let closed = loop {
            match next(&mut ws) {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(closed.0, code, "{closed:?}");
    }
}
