//! Which stack a frame is on: the thread's own, its alternate signal stack, or another
//! (a coroutine's). Activations are dropped as "left" only by comparing frames within
//! one stack; across stacks nothing is proven.
//!
//! The thread's own stack is the mapping that holds it, read once from
//! `/proc/self/maps` with plain system calls into a buffer on the stack (no allocation,
//! no lock: safe in a signal handler): the main thread's is the `[stack]` mapping, which
//! may still grow down to the stack's resource limit; another thread's is the mapping
//! that holds its thread pointer (the C library puts the thread's control block at the
//! top of the stack it allocates for it).

/// `[lo, hi)`.
pub(crate) type Bounds = (usize, usize);

/// The alternate signal stack, when the calling thread runs on it.
pub(crate) fn altstack_in_use() -> Option<Bounds> {
    // SAFETY: a zeroed stack_t is a valid out-parameter; a NULL new stack only queries.
    let mut ss: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::sigaltstack(std::ptr::null(), &mut ss) };
    (r == 0 && ss.ss_flags & libc::SS_ONSTACK != 0)
        .then(|| (ss.ss_sp as usize, ss.ss_sp as usize + ss.ss_size))
}

/// The calling thread's own stack, if it can be found.
pub(crate) fn own_stack() -> Option<Bounds> {
    // SAFETY: no arguments; always succeeds.
    let main = unsafe { libc::getpid() == libc::gettid() };
    let anchor = if main { None } else { Some(thread_pointer()?) };
    let (lo, hi, is_stack) = find_mapping(anchor)?;
    if !main {
        return Some((lo, hi));
    }
    if !is_stack {
        return None;
    }
    // The main stack grows on demand: frames recorded later may lie below today's
    // mapping, down to the resource limit.
    // SAFETY: a zeroed rlimit is a valid out-parameter.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut rl) } == 0
        && rl.rlim_cur != libc::RLIM_INFINITY
    {
        rl.rlim_cur as usize
    } else {
        1 << 30
    };
    Some((hi.saturating_sub(limit).min(lo), hi))
}

#[cfg(target_arch = "x86_64")]
fn thread_pointer() -> Option<usize> {
    let tp: usize;
    // SAFETY: reads the thread control block's self pointer at %fs:0 (the x86-64 TLS ABI
    // of glibc and musl).
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    (tp != 0).then_some(tp)
}

#[cfg(not(target_arch = "x86_64"))]
fn thread_pointer() -> Option<usize> {
    None
}

/// The mapping of `/proc/self/maps` that holds `addr` (or, for `None`, the `[stack]`
/// mapping): `(lo, hi, is_the_stack_mapping)`.
fn find_mapping(addr: Option<usize>) -> Option<(usize, usize, bool)> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let mut line = [0u8; 512];
    let mut len = 0usize;
    let mut found = None;
    'read: loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        for &c in &buf[..n as usize] {
            if c != b'\n' {
                if len < line.len() {
                    line[len] = c;
                    len += 1;
                }
                continue;
            }
            if let Some(m) = parse(&line[..len])
                && match addr {
                    Some(a) => m.0 <= a && a < m.1,
                    None => m.2,
                }
            {
                found = Some(m);
                break 'read;
            }
            len = 0;
        }
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    found
}

/// `lo-hi perms offset dev inode [path]`.
fn parse(line: &[u8]) -> Option<(usize, usize, bool)> {
    let dash = line.iter().position(|&c| c == b'-')?;
    let space = line.iter().position(|&c| c == b' ')?;
    let lo = hex(&line[..dash])?;
    let hi = hex(&line[dash + 1..space])?;
    Some((lo, hi, line.ends_with(b"[stack]")))
}

fn hex(s: &[u8]) -> Option<usize> {
    let mut v = 0usize;
    for &c in s {
        let d = (c as char).to_digit(16)?;
        v = v.checked_mul(16)?.checked_add(d as usize)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_stack_holds_a_local() {
        let x = 0u8;
        let a = std::ptr::from_ref(&x) as usize;
        let (lo, hi) = own_stack().expect("bounds");
        assert!(lo <= a && a < hi, "{lo:#x} <= {a:#x} < {hi:#x}");
        std::thread::spawn(|| {
            let y = 0u8;
            let a = std::ptr::from_ref(&y) as usize;
            let (lo, hi) = own_stack().expect("bounds");
            assert!(lo <= a && a < hi, "{lo:#x} <= {a:#x} < {hi:#x}");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn maps_lines_parse() {
        assert_eq!(
            parse(b"7ffc1000-7ffc2000 rw-p 00000000 00:00 0                          [stack]"),
            Some((0x7ffc1000, 0x7ffc2000, true))
        );
        assert_eq!(
            parse(b"55d0-55e0 r--p 00000000 08:01 123 /bin/x"),
            Some((0x55d0, 0x55e0, false))
        );
        assert_eq!(parse(b"garbage"), None);
    }
}
