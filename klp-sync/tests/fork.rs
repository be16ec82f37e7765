//! `fork()` while other threads are inside read sections and grace periods: the child,
//! one copy of the forking thread, must find the flavor working (`synchronize` returns,
//! `defer` + `barrier` run the closure, new threads read and synchronize), and so must
//! the parent afterwards.
//!
//! The child runs its checks under an alarm (a hang kills it with `SIGALRM`) and reports
//! by its exit status; a panic message in the child goes straight to standard error.
#![cfg(not(klp_loom))]

mod common;

use common::{Gate, HOLD, LIMIT, within};
use klp_sync::{Flavor, Preempt, Rcu};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Seconds the child may take before its alarm kills it.
const WATCHDOG_SECS: u32 = 10;

/// One test at a time: a preempt grace period waits for the read sections of every thread
/// of the process, and a fork waits for a preempt grace period in progress, so a test's
/// reader held across its fork would hold up another test's fork.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fork; the child runs `child` and exits with 0 when it returns, 1 when it panics (the
/// message on standard error), killed by `SIGALRM` when it hangs. Returns the child's pid.
fn fork_child(child: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the child only runs `child` and then `_exit`s; what `child` uses of this
    // process's state (the flavor, the allocator, thread creation) is made for a fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid != 0 {
        return pid;
    }
    // SAFETY: alarm and _exit are async-signal-safe and take plain integers.
    unsafe { libc::alarm(WATCHDOG_SECS) };
    let code = match catch_unwind(AssertUnwindSafe(child)) {
        Ok(()) => 0,
        Err(p) => {
            let text = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            let msg = format!("FAILED (child): {text}\n");
            // SAFETY: writes `msg` to standard error (the test's capture of output belongs
            // to the parent).
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
            1
        }
    };
    // SAFETY: ends the child without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

/// Wait for the child; panic unless it exited with 0.
fn reap(pid: libc::pid_t, what: &str) {
    let mut status = 0;
    let r = loop {
        // SAFETY: `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break r;
        }
    };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFEXITED(status) {
        assert_eq!(libc::WEXITSTATUS(status), 0, "{what}: the child failed");
    } else if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
        panic!("{what}: the child hung (its watchdog fired)");
    } else {
        panic!("{what}: the child ended with status {status:#x}");
    }
}

/// A thread that enters a read section, says so, and leaves when `leave` opens, or after
/// `limit` at the latest.
fn hold_reader<F: Flavor + 'static>(
    f: &Arc<F>,
    inside: Gate,
    leave: Gate,
    limit: Duration,
) -> std::thread::JoinHandle<()> {
    let f = Arc::clone(f);
    std::thread::spawn(move || {
        f.register_current_thread();
        let g = f.read_lock();
        inside.open();
        let end = std::time::Instant::now() + limit;
        while !leave.is_open() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(g);
        f.unregister_current_thread();
    })
}

/// Start `synchronize` on another thread; the gate opens when it returns.
fn start_sync<F: Flavor + 'static>(f: &Arc<F>) -> (Gate, std::thread::JoinHandle<()>) {
    let done = Gate::default();
    let (f, d) = (Arc::clone(f), done.clone());
    let h = std::thread::spawn(move || {
        f.synchronize();
        d.open();
    });
    (done, h)
}

/// The flavor works: a grace period waits for a new reader until it leaves, `defer` runs
/// its closure once (by `barrier` at the latest), and a grace period is quick again.
fn works<F: Flavor + 'static>(f: &Arc<F>) {
    f.synchronize();
    let (inside, leave) = (Gate::default(), Gate::default());
    let reader = hold_reader(f, inside.clone(), leave.clone(), LIMIT);
    inside.wait();
    let (done, sync) = start_sync(f);
    std::thread::sleep(HOLD);
    assert!(
        !done.is_open(),
        "synchronize returned while a reader was inside"
    );
    leave.open();
    sync.join().unwrap();
    reader.join().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    f.defer(Box::new(move || {
        r.fetch_add(1, Ordering::SeqCst);
    }));
    f.barrier();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "barrier returned before the closure ran"
    );
    // A thread of its own, reading and synchronizing.
    let f2 = Arc::clone(f);
    std::thread::spawn(move || {
        f2.register_current_thread();
        for _ in 0..100 {
            let _g = f2.read_lock();
        }
        f2.synchronize();
        f2.unregister_current_thread();
    })
    .join()
    .unwrap();
    f.synchronize_expedited();
}

#[test]
fn preempt_fork_while_a_reader_is_inside() {
    let _serial = serial();
    let p = Arc::new(Preempt::new());
    let (inside, leave) = (Gate::default(), Gate::default());
    let reader = hold_reader(&p, inside.clone(), leave.clone(), LIMIT);
    inside.wait();
    let pc = Arc::clone(&p);
    let pid = fork_child(move || {
        // The reader does not exist here: its section is gone with it.
        works(&pc);
    });
    reap(pid, "preempt, a reader inside");
    // The parent's reader is still inside: a grace period waits for it.
    let (done, sync) = start_sync(&p);
    std::thread::sleep(HOLD);
    assert!(
        !done.is_open(),
        "synchronize returned while the reader was inside"
    );
    leave.open();
    within(LIMIT, "synchronize once the reader left", move || {
        sync.join().unwrap();
        reader.join().unwrap();
    });
    works(&p);
}

#[test]
fn preempt_fork_while_a_grace_period_waits_for_a_reader() {
    let _serial = serial();
    let p = Arc::new(Preempt::new());
    // The reader leaves by itself, a while after the fork has begun: a fork waits for the
    // grace period in progress.
    let (inside, never) = (Gate::default(), Gate::default());
    let reader = hold_reader(&p, inside.clone(), never, HOLD * 6);
    inside.wait();
    let (done, sync) = start_sync(&p);
    std::thread::sleep(HOLD);
    assert!(
        !done.is_open(),
        "synchronize returned while a reader was inside"
    );
    let pc = Arc::clone(&p);
    let pid = fork_child(move || works(&pc));
    reap(pid, "preempt, a grace period in progress");
    within(LIMIT, "the parent's grace period", move || {
        sync.join().unwrap();
        reader.join().unwrap();
    });
    assert!(done.is_open());
    works(&p);
}

/// Closures deferred before the fork, counted in whichever process runs them.
static BEFORE_A: AtomicUsize = AtomicUsize::new(0);
static BEFORE_B: AtomicUsize = AtomicUsize::new(0);

#[test]
fn rcu_fork_while_a_reader_is_inside_and_a_grace_period_and_callbacks_wait_for_it() {
    let _serial = serial();
    let r = Arc::new(Rcu::new());
    let (inside, leave) = (Gate::default(), Gate::default());
    let reader = hold_reader(&r, inside.clone(), leave.clone(), LIMIT);
    inside.wait();
    // A grace period that waits for the reader...
    let (done, sync) = start_sync(&r);
    // ... and a batch of callbacks the worker has taken, which waits for it too; then a
    // callback still queued (unless the worker had not taken the first yet).
    r.defer(Box::new(|| {
        BEFORE_A.fetch_add(1, Ordering::SeqCst);
    }));
    std::thread::sleep(HOLD);
    r.defer(Box::new(|| {
        BEFORE_B.fetch_add(1, Ordering::SeqCst);
    }));
    assert!(
        !done.is_open(),
        "synchronize returned while a reader was inside"
    );
    let rc = Arc::clone(&r);
    let pid = fork_child(move || {
        // The reader, the waiting thread and the worker do not exist here.
        rc.synchronize();
        rc.barrier();
        // A batch the worker had taken is lost with it; one still queued runs here. No
        // callback runs twice.
        assert!(BEFORE_A.load(Ordering::SeqCst) <= 1);
        assert!(BEFORE_B.load(Ordering::SeqCst) <= 1);
        assert!(
            BEFORE_A.load(Ordering::SeqCst) <= BEFORE_B.load(Ordering::SeqCst),
            "a callback deferred earlier ran, a later one did not"
        );
        works(&rc);
        let cookie = rc.start_poll();
        rc.synchronize();
        assert!(rc.poll(cookie));
    });
    reap(pid, "rcu, a reader, a grace period and callbacks waiting");
    // In the parent, all of them still wait for the reader.
    std::thread::sleep(HOLD);
    assert!(
        !done.is_open(),
        "synchronize returned while the reader was inside"
    );
    assert_eq!(BEFORE_A.load(Ordering::SeqCst), 0);
    assert_eq!(BEFORE_B.load(Ordering::SeqCst), 0);
    leave.open();
    let r2 = Arc::clone(&r);
    within(
        LIMIT,
        "the parent's grace period and callbacks",
        move || {
            sync.join().unwrap();
            reader.join().unwrap();
            r2.barrier();
        },
    );
    assert_eq!(BEFORE_A.load(Ordering::SeqCst), 1);
    assert_eq!(BEFORE_B.load(Ordering::SeqCst), 1);
    works(&r);
}

#[test]
fn rcu_fork_with_an_idle_worker_while_a_reader_is_inside() {
    let _serial = serial();
    let r = Arc::new(Rcu::new());
    // The worker exists, idle.
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = Arc::clone(&ran);
    r.defer(Box::new(move || ran2.store(true, Ordering::SeqCst)));
    r.barrier();
    assert!(ran.load(Ordering::SeqCst));
    let (inside, leave) = (Gate::default(), Gate::default());
    let reader = hold_reader(&r, inside.clone(), leave.clone(), LIMIT);
    inside.wait();
    let rc = Arc::clone(&r);
    let pid = fork_child(move || works(&rc));
    reap(pid, "rcu, an idle worker, a reader inside");
    let (done, sync) = start_sync(&r);
    std::thread::sleep(HOLD);
    assert!(
        !done.is_open(),
        "synchronize returned while the reader was inside"
    );
    leave.open();
    within(LIMIT, "synchronize once the reader left", move || {
        sync.join().unwrap();
        reader.join().unwrap();
    });
    works(&r);
}

#[test]
fn a_fork_from_a_thread_other_than_the_first_leaves_both_flavors_working() {
    let _serial = serial();
    let p = Arc::new(Preempt::new());
    let r = Arc::new(Rcu::new());
    // Readers of both flavors, in and out of their sections, while another thread forks.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (p, r, stop) = (Arc::clone(&p), Arc::clone(&r), Arc::clone(&stop));
            std::thread::spawn(move || {
                r.register_current_thread();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    {
                        let _g = p.read_lock();
                        let _h = r.read_lock();
                    }
                    n += 1;
                }
                r.unregister_current_thread();
                n
            })
        })
        .collect();
    let syncer = {
        let (r, stop) = (Arc::clone(&r), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                r.synchronize();
            }
        })
    };
    std::thread::sleep(HOLD);
    let (pc, rc) = (Arc::clone(&p), Arc::clone(&r));
    let pid = std::thread::spawn(move || {
        fork_child(move || {
            works(&pc);
            works(&rc);
        })
    })
    .join()
    .unwrap();
    reap(pid, "both flavors, forked from another thread");
    stop.store(true, Ordering::Relaxed);
    syncer.join().unwrap();
    let total: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total > 0);
    works(&p);
    works(&r);
}
