//! Child processes that cannot outlive the test that started them.
//!
//! Each child runs in its own process group and is killed, group and all,
//! when its [`ChildProcess`] drops (test end, panic). If the test process
//! itself dies (SIGKILL, Ctrl-C), the kernel sends the child SIGKILL through
//! `PR_SET_PDEATHSIG`.
//!
//! The death signal fires when the *thread* that forked the child exits,
//! not the process. Test harnesses and async runtimes run code on threads
//! that come and go (libtest's per-test threads, tokio's blocking pool), so
//! every child is forked by one spawner thread that lives as long as the
//! process.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;

use rustix::process::{Pid, Signal};

use crate::Error;

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// A running child, killed with its process group on drop.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl ChildProcess {
    /// Starts `cmd` with stdout and stderr appended to `log`, stdin closed.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self, Error> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::path(log, e))?;
        let err = out.try_clone().map_err(|e| Error::path(log, e))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.process_group(0);
        let parent = rustix::process::getpid();
        // SAFETY: the closure only makes async-signal-safe syscalls (prctl,
        // getppid) and allocates nothing on success.
        unsafe {
            cmd.pre_exec(move || die_with_parent(parent));
        }
        let child = spawn_on_long_lived_thread(cmd)
            .map_err(|e| Error::io(format!("starting {name}"), e))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
            exit: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status, once the child has exited (reaps it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// A start failure for this child: how it exited and the end of its log.
    pub fn start_error(&mut self, what: &str) -> Error {
        let status = match self.exit_status() {
            Some(status) => format!("{} exited ({status})", self.name),
            None => format!("{} is still running", self.name),
        };
        Error::Start {
            what: what.to_owned(),
            detail: format!(
                "{status}; last lines of {}:\n{}",
                self.log.display(),
                log_tail(&self.log, 30)
            ),
        }
    }

    /// SIGKILL to the whole process group, then reap.
    pub fn kill(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            // The group may already be gone; nothing to do then.
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
        // The leader may have left the group (setsid); kill it by pid too.
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs in the forked child before exec.
fn die_with_parent(parent: Pid) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    // The parent may have died between fork and prctl; the signal would
    // then never come.
    if rustix::process::getppid() != Some(parent) {
        return Err(io::Error::other("the parent process exited during spawn"));
    }
    Ok(())
}

fn spawn_on_long_lived_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                // Runs until the process exits: the sender lives in a static.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = started {
            eprintln!("testenv: cannot start the spawner thread: {e}");
        }
        tx
    });
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Starts `cmd` as the leader of a new session, detached from this process:
/// it survives our exit and the terminal's Ctrl-C. For `cargo xtask up`.
pub fn spawn_detached(mut cmd: Command, log: &Path) -> Result<u32, Error> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::path(log, e))?;
    let err = out.try_clone().map_err(|e| Error::path(log, e))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting {cmd:?}"), e))?;
    Ok(child.id())
}

/// A process we may signal later, identified by pid *and* start time so a
/// recycled pid is never mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessId {
    /// The identity of a running process, if it runs.
    pub fn of(pid: u32) -> Option<Self> {
        Some(Self {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// `"<pid> <start time>"`, the pid-file format.
    pub fn to_line(self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split_whitespace();
        let pid = parts.next()?.parse().ok()?;
        let start_time = parts.next()?.parse().ok()?;
        Some(Self { pid, start_time })
    }

    /// Running (not a zombie) and still the same process.
    pub fn is_running(self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }

    pub fn signal(self, signal: Signal) -> io::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let pid = Pid::from_raw(self.pid as i32).ok_or_else(|| io::Error::other("pid 0"))?;
        rustix::process::kill_process(pid, signal).map_err(io::Error::from)
    }
}

/// Whether `pid` is a live process (zombies count as gone).
pub fn is_running(pid: u32) -> bool {
    start_time(pid).is_some()
}

/// Field 22 of `/proc/<pid>/stat`; `None` for no process or a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Fields 4..=22 remain; the start time is the 19th of them.
    fields.nth(18)?.parse().ok()
}

/// Resident memory of `pid` in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The last `lines` lines of a log file (reads at most its last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

const TEMP_PREFIX: &str = "robot-byoc-testenv-";

/// A temp dir named for this process (`robot-byoc-testenv-<kind>-<pid>-…`), removed
/// when dropped. Dirs of earlier test processes that were killed (their
/// children died with them, nothing removed their dirs) are removed first.
pub fn temp_dir(kind: &str) -> Result<tempfile::TempDir, Error> {
    sweep_stale_temp_dirs();
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{kind}-{}-", std::process::id()))
        .tempdir()
        .map_err(|e| Error::io(format!("creating a temp dir for {kind}"), e))
}

fn sweep_stale_temp_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        // <kind>-<pid>-<random>
        let owner = rest
            .split('-')
            .nth(1)
            .and_then(|pid| pid.parse::<u32>().ok());
        if owner.is_some_and(|pid| !is_running(pid)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A loopback port free right now. Another process may take it before the
/// child binds it; starts detect that and retry with new ports.
pub fn free_port(ip: std::net::IpAddr) -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind((ip, 0))
        .map_err(|e| Error::io(format!("finding a free port on {ip}"), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_lines_round_trip_and_reject_garbage() {
        let id = ProcessId {
            pid: 42,
            start_time: 777,
        };
        assert_eq!(ProcessId::parse(&id.to_line()), Some(id));
        assert_eq!(ProcessId::parse(""), None);
        assert_eq!(ProcessId::parse("42"), None);
        assert_eq!(ProcessId::parse("x 1"), None);
    }

    #[test]
    fn this_process_is_running_and_identified() {
        let me = ProcessId::of(std::process::id()).expect("own start time");
        assert!(me.is_running());
        let recycled = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!recycled.is_running());
        assert!(rss_kib(me.pid).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn a_child_is_killed_on_drop_and_a_crash_is_reported_with_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sleep.log");
        let child = ChildProcess::spawn("sleep", sleep_command(), &log).expect("spawn");
        let pid = child.id();
        assert!(is_running(pid));
        drop(child);
        assert!(!is_running(pid), "pid {pid} survived its guard");

        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom: address already in use >&2; exit 3"]);
        let mut failing = ChildProcess::spawn("failing", cmd, &log).expect("spawn");
        let status = loop {
            if let Some(status) = failing.exit_status() {
                break status;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(3));
        let error = failing.start_error("the thing");
        assert!(error.is_port_conflict(), "{error}");
        assert!(error.to_string().contains("exit status: 3"), "{error}");
    }

    #[test]
    fn a_child_outlives_the_short_lived_thread_that_asked_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sleep.log");
        // From a thread that exits right away, start one child through the
        // spawner and, as a control, one forked by the thread itself.
        let (mut guarded, mut forked_by_thread) = std::thread::spawn(move || {
            let guarded = ChildProcess::spawn("sleep", sleep_command(), &log).expect("spawn");
            let parent = rustix::process::getpid();
            let mut cmd = sleep_command();
            // SAFETY: as in ChildProcess::spawn.
            unsafe {
                cmd.pre_exec(move || die_with_parent(parent));
            }
            (guarded, cmd.spawn().expect("spawn control"))
        })
        .join()
        .expect("thread");
        // The control dies when its forking thread exits: the pitfall is real.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while forked_by_thread.try_wait().expect("wait").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the control child did not get its death signal"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // The same thread exit left the spawner's child alone.
        assert_eq!(
            guarded.exit_status(),
            None,
            "the child died with its thread"
        );
    }

    fn sleep_command() -> Command {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        cmd
    }
}
