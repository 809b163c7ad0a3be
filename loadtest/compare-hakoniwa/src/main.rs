use hakoniwa::{Container, Namespace};
use std::time::{Duration, Instant};

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).saturating_sub(1)].as_secs_f64() * 1000.0;
    (p(0.5), p(0.99))
}

fn main() {
    let n = 100;
    let mut floor = Vec::new();
    let mut plain = Vec::new();
    let mut cg = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        std::process::Command::new("/usr/bin/python3.11").args(["-c", "print(1)"]).output().unwrap();
        floor.push(t.elapsed());

        // Same layers as a Kiln pod, minus cgroups: pid, mount, net, ipc, uts, rootfs /, tmpfs.
        let mut c = Container::new();
        c.unshare(Namespace::Network).unshare(Namespace::Ipc).unshare(Namespace::Uts);
        c.rootfs("/").unwrap().devfsmount("/dev").tmpfsmount("/tmp");
        let t = Instant::now();
        let out = c.command("/usr/bin/python3.11").args(["-c", "print(1)"]).output().unwrap();
        plain.push(t.elapsed());
        assert_eq!(out.stdout, b"1\n", "{:?}", String::from_utf8_lossy(&out.stderr));

        let mut c = Container::new();
        c.unshare(Namespace::Network).unshare(Namespace::Ipc).unshare(Namespace::Uts);
        c.rootfs("/").unwrap().devfsmount("/dev").tmpfsmount("/tmp");
        let mut res = hakoniwa::cgroups::Resources::default();
        res.memory(hakoniwa::cgroups::Memory::default().limit(256 << 20).clone()).pids(hakoniwa::cgroups::Pids::default().limit(64).clone());
        c.cgroups_resources(res);
        let t = Instant::now();
        let out = c.command("/usr/bin/python3.11").args(["-c", "print(1)"]).output().unwrap();
        cg.push(t.elapsed());
        assert_eq!(out.stdout, b"1\n", "{:?}", String::from_utf8_lossy(&out.stderr));
    }
    let (f50, f99) = stats(floor);
    let (p50, p99) = stats(plain);
    let (c50, c99) = stats(cg);
    println!("floor p50 {f50:.2} ms p99 {f99:.2}");
    println!("hakoniwa namespaces+rootfs p50 {p50:.2} ms p99 {p99:.2} ratio {:.2}", p50 / f50);
    println!("hakoniwa + cgroup v1 limits p50 {c50:.2} ms p99 {c99:.2} ratio {:.2}", c50 / f50);
}
