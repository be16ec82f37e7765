//! A program that live patches itself while its threads run.
//!
//! ```sh
//! cargo run --release -p klp-core --example patch_self
//! ```
//!
//! The program's "protocol" is a pair of patchable functions that must come from the same
//! version: `encode` and `decode`. A request ([`exchange`]) encodes, may wait for its peer
//! (a blocking call), then decodes, and checks that it got its value back. Version 2 of
//! the protocol changes both functions; a thread that ran version 1's `encode` and
//! version 2's `decode` would get a wrong value. The patch is enabled, then disabled,
//! while
//!
//! * a thread named `busy` makes requests in a loop: it switches between two of its
//!   requests (at its next outermost patchable call), so it never sees a mix;
//! * a thread named `blocked` waits in the middle of a request. `exchange` holds an
//!   encoded value across the wait, so the patch replaces it too, as a kernel livepatch
//!   includes every function that must not see both versions: a thread switches only
//!   while none of the functions a patch replaces is on its stack. The transition waits
//!   for that thread, which finishes its request with version 1 while the other threads
//!   already run version 2.
//!
//! The engine's log (the kernel's lines) goes to standard error; the program's own lines
//! go to standard output, which `tests/patch_self_example.rs` checks.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use klp_core::{Func, Klp, Object, Patch, park, patchable, unpark};
use klp_sync::Preempt;

/// How long any step may take before the program gives up.
const LIMIT: Duration = Duration::from_secs(20);

/// The peer that the request of `blocked` waits for.
static PEER: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);
/// Set by `blocked` once it waits inside its request.
static WAITING: AtomicBool = AtomicBool::new(false);

patchable! {
    /// Version 1 of the encoding.
    fn encode(x: u64) -> u64 { x + 1 }
}

patchable! {
    /// Version 1 of the decoding: undoes version 1 of [`encode`].
    fn decode(wire: u64) -> u64 { wire - 1 }
}

patchable! {
    /// One request: `(what went on the wire, what came back)`.
    fn exchange(x: u64, wait: bool) -> (u64, u64) { request(x, wait) }
}

/// Version 2 of the encoding.
fn encode_v2(x: u64) -> u64 {
    x * 3
}

/// Version 2 of the decoding.
fn decode_v2(wire: u64) -> u64 {
    wire / 3
}

/// Version 2 of [`exchange`]: the same request, replaced so that no thread is switched
/// while it holds a value encoded by the other version.
fn exchange_v2(x: u64, wait: bool) -> (u64, u64) {
    request(x, wait)
}

/// Encode `x`, wait for the peer when asked (parked, as around any blocking call), and
/// decode. `encode` and `decode` are called through their sites: they run the version
/// of the calling thread.
fn request(x: u64, wait: bool) -> (u64, u64) {
    let wire = encode(x);
    if wait {
        let peer = PEER.lock().unwrap().take().expect("a peer to wait for");
        WAITING.store(true, Ordering::SeqCst);
        park();
        let _ = peer.recv();
        unpark();
    }
    (wire, decode(wire))
}

/// Which version produced `wire` for `x` (`x >= 1`: the versions differ).
fn version_of(x: u64, wire: u64) -> u32 {
    if wire == x + 1 {
        1
    } else if wire == x * 3 {
        2
    } else {
        panic!("exchange({x}) put {wire} on the wire: no version does that")
    }
}

/// Poll `done` until it holds, for at most [`LIMIT`].
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// The patch state of the thread named `name` in `klp` (0 unpatched, 1 patched).
fn patch_state(klp: &Klp<Preempt>, name: &str) -> i8 {
    let prefix = format!("{name}:");
    klp.tasks()
        .into_iter()
        .find(|t| t.task.starts_with(&prefix))
        .map(|t| t.patch_state)
        .unwrap_or_else(|| panic!("no task named {name}"))
}

fn main() {
    let klp = Klp::new(Preempt::new());
    let (wire, back) = exchange(5, false);
    println!("version 1: exchange(5) = ({wire}, {back})");

    // `busy`: requests in a loop, recording every change of version.
    let stop = Arc::new(AtomicBool::new(false));
    let busy_version = Arc::new(AtomicU32::new(1));
    let busy = {
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&busy_version));
        thread::Builder::new()
            .name("busy".into())
            .spawn(move || {
                let (mut calls, mut versions) = (0u64, vec![1]);
                while !stop.load(Ordering::SeqCst) {
                    let x = calls % 1000 + 1;
                    let (wire, back) = exchange(x, false);
                    assert_eq!(back, x, "a request mixed the versions");
                    let v = version_of(x, wire);
                    if Some(&v) != versions.last() {
                        versions.push(v);
                        seen.store(v, Ordering::SeqCst);
                    }
                    calls += 1;
                    thread::yield_now();
                }
                (calls, versions)
            })
            .unwrap()
    };

    // `blocked`: one request that waits for its peer, then one more.
    let (peer, peer_rx) = mpsc::channel();
    *PEER.lock().unwrap() = Some(peer_rx);
    let blocked = thread::Builder::new()
        .name("blocked".into())
        .spawn(|| (exchange(7, true), exchange(7, false)))
        .unwrap();
    wait_until("blocked waits", || WAITING.load(Ordering::SeqCst));

    println!("enabling protocol_v2 while busy makes requests and blocked waits inside one");
    klp.enable(
        Patch::new("protocol_v2").object(
            Object::vmlinux()
                .func(Func::new("encode", encode_v2 as fn(u64) -> u64))
                .func(Func::new("decode", decode_v2 as fn(u64) -> u64))
                .func(Func::new(
                    "exchange",
                    exchange_v2 as fn(u64, bool) -> (u64, u64),
                )),
        ),
    )
    .expect("enable protocol_v2");

    wait_until("busy runs version 2", || {
        busy_version.load(Ordering::SeqCst) == 2
    });
    println!("busy switched to version 2 between two requests");
    assert!(klp.in_transition(), "blocked holds the transition up");
    println!(
        "in transition: busy patch_state {}, blocked patch_state {} (inside its version 1 request)",
        patch_state(&klp, "busy"),
        patch_state(&klp, "blocked"),
    );
    let (wire, back) = exchange(5, false);
    println!(
        "main: exchange(5) = ({wire}, {back}): version {}",
        version_of(5, wire)
    );

    peer.send(()).unwrap();
    let ((wire1, back1), (wire2, back2)) = blocked.join().unwrap();
    println!(
        "blocked: its waiting request finished with version {}: exchange(7) = ({wire1}, {back1})",
        version_of(7, wire1)
    );
    println!(
        "blocked: its next request ran version {}: exchange(7) = ({wire2}, {back2})",
        version_of(7, wire2)
    );
    assert!(
        klp.wait_transition(LIMIT),
        "the patching transition completes"
    );
    let info = klp.patch("protocol_v2").expect("protocol_v2 is in use");
    println!(
        "transition complete: protocol_v2 enabled = {}",
        info.enabled
    );

    println!("disabling protocol_v2");
    klp.set_enabled("protocol_v2", false)
        .expect("disable protocol_v2");
    assert!(
        klp.wait_transition(LIMIT),
        "the unpatching transition completes"
    );
    wait_until("busy runs version 1", || {
        busy_version.load(Ordering::SeqCst) == 1
    });
    let (wire, back) = exchange(5, false);
    println!("version 1 again: exchange(5) = ({wire}, {back})");

    stop.store(true, Ordering::SeqCst);
    let (calls, versions) = busy.join().unwrap();
    let versions: Vec<String> = versions.iter().map(u32::to_string).collect();
    println!(
        "busy: versions {}, never a mix ({calls} requests)",
        versions.join(" -> ")
    );
    assert!(klp.patch("protocol_v2").is_none(), "the patch is gone");
}
