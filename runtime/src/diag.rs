//! What a stuck process was doing, for the error that reports it.
//!
//! A `vela bench` on the GPU machine has, a few times, never made its first step: the policy's
//! batching thread never answered, and nothing in the log said where it stopped. Threads that
//! do slow or risky work mark their stage here (cheap: a lock and a string per stage change,
//! a few per step at most), and a watchdog that gives up prints [`report`]: every marked
//! stage with its age, and every thread of the process with the kernel's view of it (state,
//! wait channel, current system call), which tells a lock wait from a driver call.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

static STAGES: Mutex<BTreeMap<String, (String, Instant)>> = Mutex::new(BTreeMap::new());

/// Records that `who` (a thread or component; one entry each) is now at `stage`.
pub fn stage(who: &str, stage: impl Into<String>) {
    let mut s = STAGES.lock().unwrap_or_else(|e| e.into_inner());
    s.insert(who.to_string(), (stage.into(), Instant::now()));
}

/// Forgets `who` (a component that ended).
pub fn clear(who: &str) {
    STAGES.lock().unwrap_or_else(|e| e.into_inner()).remove(who);
}

/// The marked stages, oldest change first, as `who: stage (N s ago)` lines.
pub fn stages() -> Vec<String> {
    let s = STAGES.lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<_> = s.iter().collect();
    v.sort_by_key(|(_, (_, t))| *t);
    v.into_iter()
        .map(|(who, (what, t))| format!("{who}: {what} ({:.1} s ago)", t.elapsed().as_secs_f64()))
        .collect()
}

/// One line per thread of this process: id, name, state, wait channel and system call
/// (Linux `/proc`; empty elsewhere or where `/proc` is not readable).
pub fn threads() -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    let mut tids: Vec<u64> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    for tid in tids {
        let read = |f: &str| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/{f}"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let comm = read("comm");
        // The state is the field after the parenthesised name, which may itself hold spaces.
        let stat = read("stat");
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        let wchan = read("wchan");
        let syscall = read("syscall");
        let call = syscall.split_whitespace().next().map(syscall_name).unwrap_or("?");
        let mut line = format!("{tid} {comm:<16} {state}");
        if !wchan.is_empty() && wchan != "0" {
            let _ = write!(line, " wchan={wchan}");
        }
        let _ = write!(line, " syscall={call}");
        out.push(line);
    }
    out
}

/// Names of the x86-64 system calls a blocked thread is usually in; others by number.
fn syscall_name(nr: &str) -> &'static str {
    match nr {
        "0" => "read",
        "1" => "write",
        "7" => "poll",
        "16" => "ioctl",
        "23" => "select",
        "35" => "nanosleep",
        "202" => "futex",
        "230" => "clock_nanosleep",
        "232" => "epoll_wait",
        "270" => "pselect6",
        "271" => "ppoll",
        "281" => "epoll_pwait",
        "-1" => "none (in user space)",
        "running" => "running",
        _ => "other",
    }
}

/// Stages and threads together, for an error message or a log.
pub fn report() -> String {
    let mut s = String::from("stages:\n");
    for l in stages() {
        let _ = writeln!(s, "  {l}");
    }
    let t = threads();
    if !t.is_empty() {
        s.push_str("threads (id, name, state, kernel wait, system call):\n");
        for l in t {
            let _ = writeln!(s, "  {l}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_and_threads_are_reported() {
        stage("test-component", "loading");
        stage("test-component", "waiting for frames");
        let r = report();
        assert!(r.contains("test-component: waiting for frames"), "{r}");
        assert!(!r.contains("test-component: loading"), "{r}");
        clear("test-component");
        assert!(!report().contains("test-component"));
        #[cfg(target_os = "linux")]
        {
            let parked = std::thread::Builder::new()
                .name("diag-parked".into())
                .spawn(|| std::thread::sleep(std::time::Duration::from_secs(2)))
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
            let t = threads();
            let line = t.iter().find(|l| l.contains("diag-parked")).expect("the sleeping thread is listed");
            assert!(line.contains(" S"), "a sleeping thread is in state S: {line}");
            parked.join().unwrap();
        }
    }
}
