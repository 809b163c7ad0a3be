mod common;
use common::*;
use kiln::outcome::Status;

#[tokio::test]
async fn python_hello_is_accepted_with_its_output() {
    let o = run(source("python", "print('hello')")).await;
    assert_eq!(o.status, Status::Accepted, "{o:?}");
    assert_eq!(o.stdout.0, b"hello\n");
}
