//! The robots, in memory and optionally in a state file.
//!
//! With a state file every change is written before it is visible: the
//! whole set goes to a temporary file of a unique name in the same
//! directory (created with `O_EXCL | O_NOFOLLOW`, mode 0600), which is
//! fsynced, renamed over the state file, and the directory fsynced. A
//! crash at any point leaves either the old or the new state file, never
//! a torn one; temporary files a crash left behind are removed at the
//! next start.
//!
//! A failure before the rename changes nothing, and is answered so. Once
//! the rename is done the file holds the change, so a failed directory
//! fsync after it is not "nothing changed": the change is applied and
//! answered as done, and logged and counted as of unknown durability (it
//! may not survive a power loss).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prometheus_client::metrics::counter::Counter;
use robot_api::{Robot, RobotList};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

/// Written into the state file so a stray JSON file is not mistaken for one.
const FORMAT: &str = "robot-server-state";
const VERSION: u32 = 1;

/// Temporary files are `.<state file name>.<random>.tmp`.
const TEMP_SUFFIX: &str = ".tmp";

/// Why the state file cannot be used at start-up. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "state file {path} is corrupt or truncated: {reason}; it was left untouched: repair it or move it away"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is in use by another robot-server (it holds {lock})")]
    Locked { path: PathBuf, lock: PathBuf },
}

/// Why a change was refused. Nothing changed in any case.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("robot not found")]
    NotFound,
    #[error("robot already exists")]
    AlreadyExists,
    #[error("cannot write state file {path}: {source}")]
    Persist {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A change to the set of robots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create(Robot),
    /// Replace the robot `name` by `robot`, which may carry another name.
    Replace {
        name: String,
        robot: Robot,
    },
    Delete(String),
}

impl Change {
    /// The name that disappears, if any.
    fn removed(&self) -> Option<&str> {
        match self {
            Change::Create(_) => None,
            Change::Replace { name, .. } | Change::Delete(name) => Some(name),
        }
    }

    /// The robot that appears (or is overwritten), if any.
    fn inserted(&self) -> Option<&Robot> {
        match self {
            Change::Create(robot) | Change::Replace { robot, .. } => Some(robot),
            Change::Delete(_) => None,
        }
    }

    /// Whether the change applies to `robots` as they are.
    fn check(&self, robots: &Robots) -> Result<(), StoreError> {
        match self {
            Change::Create(robot) if robots.contains_key(&robot.name) => {
                Err(StoreError::AlreadyExists)
            }
            Change::Create(_) => Ok(()),
            Change::Replace { name, .. } | Change::Delete(name) if !robots.contains_key(name) => {
                Err(StoreError::NotFound)
            }
            // A rename onto another robot would silently lose that robot.
            Change::Replace { name, robot } if *name != robot.name => {
                if robots.contains_key(&robot.name) {
                    Err(StoreError::AlreadyExists)
                } else {
                    Ok(())
                }
            }
            Change::Replace { .. } | Change::Delete(_) => Ok(()),
        }
    }

    fn apply(self, robots: &mut Robots) {
        match self {
            Change::Create(robot) => {
                robots.insert(robot.name, robot.color);
            }
            Change::Replace { name, robot } => {
                robots.remove(&name);
                robots.insert(robot.name, robot.color);
            }
            Change::Delete(name) => {
                robots.remove(&name);
            }
        }
    }
}

/// Name to color, ordered by name for the listing.
type Robots = BTreeMap<String, String>;

/// The robot store. Cheap to clone; clones share the robots.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    robots: RwLock<Robots>,
    state: Option<StateFile>,
    /// Changes applied whose directory fsync failed after the rename.
    unsynced: Counter,
}

/// The durable copy, and the lock that keeps it to one writer at a time.
struct StateFile {
    path: PathBuf,
    dir: PathBuf,
    /// `.<file name>.`: what temporary files' names start with.
    temp_prefix: OsString,
    /// Held for the life of the process: another server on the same file
    /// would overwrite our changes.
    _lock: File,
    /// Taken for a whole change (check, write, apply), so changes are
    /// written in the order they become visible.
    turn: Mutex<()>,
    /// A failure to inject at the next write (tests only).
    #[cfg(test)]
    fault: Mutex<Option<tests::Fault>>,
}

/// How far a write got.
enum Written {
    /// The new state is on disk, rename and all.
    Durable,
    /// The file holds the new state, but the directory fsync after the
    /// rename failed: the rename may not survive a power loss.
    Unsynced(io::Error),
}

impl Store {
    /// An empty store that forgets everything on exit, like the reference.
    #[cfg(test)]
    pub fn in_memory() -> Self {
        Self::with(Robots::new(), None, Counter::default())
    }

    /// A store kept in `path` when given, else in memory. A missing file
    /// starts empty; a file that is not a whole state file is an error.
    /// `unsynced` counts the changes of unknown durability.
    pub fn open(path: Option<&Path>, unsynced: Counter) -> Result<Self, LoadError> {
        let Some(path) = path else {
            return Ok(Self::with(Robots::new(), None, unsynced));
        };
        let state = StateFile::lock(path)?;
        state.remove_leftovers();
        let robots = state.load()?;
        // Written back at once: proves the directory is writable (and
        // syncable) before the first client's change depends on it.
        let written = state.write(&Snapshot {
            robots: &robots,
            change: None,
        });
        match written {
            Ok(Written::Durable) => {}
            Ok(Written::Unsynced(source)) | Err(source) => {
                return Err(LoadError::Write {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        Ok(Self::with(robots, Some(state), unsynced))
    }

    fn with(robots: Robots, state: Option<StateFile>, unsynced: Counter) -> Self {
        Self {
            inner: Arc::new(Inner {
                robots: RwLock::new(robots),
                state,
                unsynced,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Robots> {
        self.inner
            .robots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Robots> {
        self.inner
            .robots
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, name: &str) -> Option<Robot> {
        self.read()
            .get_key_value(name)
            .map(|(name, color)| Robot::new(name.clone(), color.clone()))
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Up to `limit` robots with names after `after`, in name order, and
    /// no more than fit in `max_bytes` of JSON (but always one, if any:
    /// paging must go on); `next` is set whenever more follow.
    pub fn list(&self, after: Option<&str>, limit: usize, max_bytes: usize) -> RobotList {
        let robots = self.read();
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        // The page's JSON is `{"items":[A,B,...]}` or, when more follow,
        // `{"items":[A,B,...],"next":"<B's name>"}`.
        const FRAME: usize = r#"{"items":[]}"#.len();
        const NEXT: usize = r#","next":"#.len();
        let mut size = FRAME;
        let mut items: Vec<Robot> = Vec::new();
        let mut more = false;
        for (name, color) in robots.range::<str, _>((start, Bound::Unbounded)) {
            if items.len() == limit {
                more = true;
                break;
            }
            let item = json_len(&Entry { name, color }) + usize::from(!items.is_empty());
            // Room for this one, and for naming it as `next`.
            let with_next = size + item + NEXT + json_len(name);
            if with_next > max_bytes && !items.is_empty() {
                more = true;
                break;
            }
            size += item;
            items.push(Robot::new(name.clone(), color.clone()));
        }
        let next = match (more, items.last()) {
            (true, Some(last)) => Some(last.name.clone()),
            _ => None,
        };
        RobotList { items, next }
    }

    /// Applies `change` if it fits the robots as they are, durably first
    /// when there is a state file. All or nothing, even if the caller
    /// stops waiting.
    pub async fn change(&self, change: Change) -> Result<(), StoreError> {
        if self.inner.state.is_none() {
            return self.change_in_memory(change);
        }
        // On a blocking thread, which runs to the end even when the request
        // is dropped: the file and the map must not disagree.
        let store = self.clone();
        match tokio::task::spawn_blocking(move || store.change_durably(change)).await {
            Ok(result) => result,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    fn change_in_memory(&self, change: Change) -> Result<(), StoreError> {
        let mut robots = self.write();
        change.check(&robots)?;
        change.apply(&mut robots);
        Ok(())
    }

    fn change_durably(&self, change: Change) -> Result<(), StoreError> {
        let Some(state) = &self.inner.state else {
            return self.change_in_memory(change);
        };
        let _turn = state.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let written = {
            // Readers go on meanwhile and see the old state until the new
            // one is on disk.
            let robots = self.read();
            change.check(&robots)?;
            state
                .write(&Snapshot {
                    robots: &robots,
                    change: Some(&change),
                })
                .map_err(|source| StoreError::Persist {
                    path: state.path.clone(),
                    source,
                })?
        };
        // Renamed: the file holds the change, so memory must too, whatever
        // the directory sync said.
        change.apply(&mut self.write());
        if let Written::Unsynced(error) = written {
            self.inner.unsynced.inc();
            tracing::error!(
                path = %state.path.display(),
                %error,
                "a change was saved to the state file and applied, but the directory \
                 could not be synced after the rename: it may not survive a power loss"
            );
        }
        Ok(())
    }
}

impl StateFile {
    fn lock(path: &Path) -> Result<Self, LoadError> {
        let file_name = path.file_name().ok_or_else(|| LoadError::Read {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let sibling = |suffix: &str| {
            let mut name = file_name.to_owned();
            name.push(suffix);
            dir.join(name)
        };
        let lock_path = sibling(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| LoadError::Write {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(LoadError::Locked {
                    path: path.to_owned(),
                    lock: lock_path,
                });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(LoadError::Write {
                    path: lock_path,
                    source,
                });
            }
        }
        let mut temp_prefix = OsString::from(".");
        temp_prefix.push(file_name);
        temp_prefix.push(".");
        Ok(Self {
            path: path.to_owned(),
            dir,
            temp_prefix,
            _lock: lock,
            turn: Mutex::new(()),
            #[cfg(test)]
            fault: Mutex::new(None),
        })
    }

    /// Removes the temporary files a crash left (and the fixed-name one
    /// of earlier versions). Only while holding the lock: no other server
    /// is writing one.
    fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return; // Reading the state file will say what is wrong.
        };
        let mut legacy = self.path.file_name().unwrap_or_default().to_owned();
        legacy.push(TEMP_SUFFIX);
        let prefix = self.temp_prefix.as_encoded_bytes();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let bytes = name.as_encoded_bytes();
            let ours = (bytes.starts_with(prefix) && bytes.ends_with(TEMP_SUFFIX.as_bytes()))
                || name == legacy;
            if !ours || entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(
                    file = %entry.path().display(),
                    "removed a temporary state file left by an interrupted write"
                ),
                Err(error) => tracing::warn!(
                    file = %entry.path().display(),
                    %error,
                    "cannot remove a temporary state file left by an interrupted write"
                ),
            }
        }
    }

    fn load(&self) -> Result<Robots, LoadError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Robots::new()),
            Err(source) => {
                return Err(LoadError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        decode(&bytes).map_err(|reason| LoadError::Corrupt {
            path: self.path.clone(),
            reason,
        })
    }

    /// Writes `snapshot` over the state file. An error means the file was
    /// not replaced (the temporary file is removed).
    fn write(&self, snapshot: &Snapshot<'_>) -> io::Result<Written> {
        let bytes = serde_json::to_vec(snapshot).map_err(io::Error::other)?;
        // A fresh name each time, never an existing file or a symlink, and
        // private from the start: the rename keeps the mode.
        let mut temp = tempfile::Builder::new()
            .prefix(&self.temp_prefix)
            .suffix(TEMP_SUFFIX)
            .make_in(&self.dir, |path| {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(path)
            })?;
        #[cfg(test)]
        self.inject(tests::Step::WriteTemp, &mut temp, &bytes)?;
        temp.write_all(&bytes)?;
        temp.as_file().sync_all()?;
        #[cfg(test)]
        self.inject(tests::Step::Rename, &mut temp, &[])?;
        temp.persist(&self.path).map_err(|e| e.error)?;
        // The rename itself is durable only once the directory is synced.
        let synced = self
            .inject_sync()
            .and_then(|()| File::open(&self.dir)?.sync_all());
        Ok(match synced {
            Ok(()) => Written::Durable,
            Err(e) => Written::Unsynced(e),
        })
    }
}

impl StateFile {
    /// The fault-injection seam before the directory sync; nothing outside
    /// tests.
    fn inject_sync(&self) -> io::Result<()> {
        #[cfg(test)]
        if self.take_fault(tests::Step::SyncDir).is_some() {
            return Err(io::Error::other("injected failure of the directory sync"));
        }
        Ok(())
    }

    /// Fails the write at `step` when a test asked for it. A crash leaves
    /// the temporary file behind, with `written` more bytes in it (a torn
    /// write), where a failure removes it.
    #[cfg(test)]
    fn inject(
        &self,
        step: tests::Step,
        temp: &mut tempfile::NamedTempFile,
        written: &[u8],
    ) -> io::Result<()> {
        let Some(fault) = self.take_fault(step) else {
            return Ok(());
        };
        if fault.crash {
            temp.write_all(written)?;
            temp.disable_cleanup(true);
        }
        Err(io::Error::other(format!("injected failure at {step:?}")))
    }

    #[cfg(test)]
    fn take_fault(&self, step: tests::Step) -> Option<tests::Fault> {
        let mut fault = self.fault.lock().unwrap_or_else(PoisonError::into_inner);
        fault.take_if(|f| f.step == step)
    }
}

/// The length of `value` as compact JSON, counted without keeping it.
fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing strings to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The robots as they will be after `change`, serialised without copying them.
struct Snapshot<'a> {
    robots: &'a Robots,
    change: Option<&'a Change>,
}

impl Serialize for Snapshot<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut state = serializer.serialize_struct("State", 3)?;
        state.serialize_field("format", FORMAT)?;
        state.serialize_field("version", &VERSION)?;
        state.serialize_field("robots", &Entries(self))?;
        state.end()
    }
}

struct Entries<'a, 'b>(&'a Snapshot<'b>);

#[derive(Serialize)]
struct Entry<'a> {
    name: &'a str,
    color: &'a str,
}

impl Serialize for Entries<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let removed = self.0.change.and_then(Change::removed);
        let inserted = self.0.change.and_then(Change::inserted);
        let kept = self.0.robots.iter().filter(|(name, _)| {
            Some(name.as_str()) != removed && Some(name.as_str()) != inserted.map(|r| &*r.name)
        });
        let entries = kept
            .map(|(name, color)| Entry { name, color })
            .chain(inserted.map(|r| Entry {
                name: &r.name,
                color: &r.color,
            }));
        serializer.collect_seq(entries)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateIn {
    format: String,
    version: u32,
    robots: Vec<Robot>,
}

/// Reads a state file, refusing anything but a whole, valid one.
fn decode(bytes: &[u8]) -> Result<Robots, String> {
    let state: StateIn = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if state.format != FORMAT {
        return Err(format!("format is {:?}, not {FORMAT:?}", state.format));
    }
    if state.version != VERSION {
        return Err(format!(
            "version {} is not supported (this server reads version {VERSION})",
            state.version
        ));
    }
    let mut robots = Robots::new();
    for robot in state.robots {
        robot
            .validate()
            .map_err(|e| format!("robot {:?}: {e}", robot.name))?;
        if robots.contains_key(&robot.name) {
            return Err(format!("robot {:?} appears twice", robot.name));
        }
        robots.insert(robot.name, robot.color);
    }
    Ok(robots)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The steps of a write at which a test can make it fail.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Step {
        /// The temporary file is created, nothing written to it yet.
        WriteTemp,
        /// The temporary file is written and fsynced, not yet renamed.
        Rename,
        /// Renamed over the state file, the directory not yet fsynced.
        SyncDir,
    }

    /// A failure at `step`; a `crash` also leaves behind what a process
    /// killed there would (its temporary file, torn or whole).
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Fault {
        pub step: Step,
        pub crash: bool,
    }

    impl Store {
        fn fail_next_write(&self, fault: Fault) {
            let state = self.inner.state.as_ref().expect("a state file");
            *state.fault.lock().unwrap() = Some(fault);
        }
    }

    fn open(path: &Path) -> Store {
        Store::open(Some(path), Counter::default()).unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[derive(Clone, Debug)]
    enum Op {
        Change(Change),
        List { after: Option<String>, limit: usize },
    }

    /// Few distinct names, so operations collide often.
    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "ü", "a b", "x&y", "%"]).prop_map(String::from)
    }

    fn robot() -> impl Strategy<Value = Robot> {
        (name(), "[a-z]{0,3}").prop_map(|(n, c)| Robot::new(n, c))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            robot().prop_map(|r| Op::Change(Change::Create(r))),
            (name(), robot()).prop_map(|(name, robot)| Op::Change(Change::Replace { name, robot })),
            name().prop_map(|n| Op::Change(Change::Delete(n))),
            (proptest::option::of(name()), 1usize..4)
                .prop_map(|(after, limit)| Op::List { after, limit }),
        ]
    }

    /// What a change does, by the contract, to a plain map.
    fn model_change(model: &mut Robots, change: &Change) -> Result<(), &'static str> {
        match change {
            Change::Create(r) => {
                if model.contains_key(&r.name) {
                    return Err("exists");
                }
                model.insert(r.name.clone(), r.color.clone());
            }
            Change::Replace { name, robot } => {
                if !model.contains_key(name) {
                    return Err("not found");
                }
                if name != &robot.name && model.contains_key(&robot.name) {
                    return Err("exists");
                }
                model.remove(name);
                model.insert(robot.name.clone(), robot.color.clone());
            }
            Change::Delete(name) => {
                if model.remove(name).is_none() {
                    return Err("not found");
                }
            }
        }
        Ok(())
    }

    fn outcome(r: &Result<(), StoreError>) -> Result<(), &'static str> {
        match r {
            Ok(()) => Ok(()),
            Err(StoreError::AlreadyExists) => Err("exists"),
            Err(StoreError::NotFound) => Err("not found"),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn all(store: &Store) -> Vec<Robot> {
        store.list(None, usize::MAX, usize::MAX).items
    }

    fn model_list(model: &Robots) -> Vec<Robot> {
        model
            .iter()
            .map(|(n, c)| Robot::new(n.clone(), c.clone()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The store (in memory and on disk) behaves like a plain map under
        /// the contract's rules, and the file reads back the same robots.
        #[test]
        fn store_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.json");
            let durable = open(&path);
            let memory = Store::in_memory();
            let mut model = Robots::new();
            block_on(async {
                for op in ops {
                    match op {
                        Op::Change(change) => {
                            let expected = model_change(&mut model, &change);
                            prop_assert_eq!(outcome(&memory.change(change.clone()).await), expected);
                            prop_assert_eq!(outcome(&durable.change(change).await), expected);
                        }
                        Op::List { after, limit } => {
                            let page = durable.list(after.as_deref(), limit, usize::MAX);
                            let rest: Vec<Robot> = model_list(&model)
                                .into_iter()
                                .filter(|r| after.as_deref().is_none_or(|a| r.name.as_str() > a))
                                .collect();
                            prop_assert_eq!(&page.items[..], &rest[..rest.len().min(limit)]);
                            prop_assert_eq!(page.next.is_some(), rest.len() > limit);
                            prop_assert_eq!(page, memory.list(after.as_deref(), limit, usize::MAX));
                        }
                    }
                }
                Ok(())
            })?;
            prop_assert_eq!(all(&memory), model_list(&model));
            prop_assert_eq!(all(&durable), model_list(&model));
            drop(durable);
            let reopened = open(&path);
            prop_assert_eq!(all(&reopened), model_list(&model));
        }

        /// Paging through the listing visits every robot once, in order,
        /// and a page's JSON is never over the byte limit (unless a single
        /// robot is).
        #[test]
        fn paging_visits_everything_once(
            robots in prop::collection::btree_map(".{1,8}", "\\PC{0,12}", 0..30),
            limit in 1usize..7,
            max_bytes in prop_oneof![Just(usize::MAX), 0usize..200],
        ) {
            let store = Store::in_memory();
            block_on(async {
                for (n, c) in &robots {
                    store.change(Change::Create(Robot::new(n.clone(), c.clone()))).await.unwrap();
                }
            });
            let names: Vec<String> = robots.keys().cloned().collect();
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store.list(after.as_deref(), limit, max_bytes);
                prop_assert!(page.items.len() <= limit);
                let bytes = serde_json::to_vec(&page).unwrap().len();
                prop_assert!(
                    bytes <= max_bytes || page.items.len() == 1,
                    "{} bytes over {}", bytes, max_bytes
                );
                prop_assert_eq!(
                    page.next.as_ref(),
                    page.items.last().map(|r| &r.name).filter(|last| Some(*last) != names.last())
                );
                seen.extend(page.items.into_iter().map(|r| r.name));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            prop_assert_eq!(seen, names);
        }
    }

    #[test]
    fn a_missing_file_starts_empty_and_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robots.json");
        let store = open(&path);
        assert_eq!(store.len(), 0);
        assert!(path.exists());
    }

    #[test]
    fn a_second_server_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robots.json");
        let _first = open(&path);
        let err = Store::open(Some(&path), Counter::default()).err().unwrap();
        assert!(matches!(err, LoadError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("robots.json"), "{err}");
    }

    #[test]
    fn bad_files_are_refused_and_left_alone() {
        let cases: &[(&str, &str)] = &[
            ("", "EOF"),
            (
                r#"{"format":"robot-server-state","version":1,"robots":[{"name":"a","#,
                "EOF",
            ),
            ("[]", "invalid length"),
            (r#"{"format":"other","version":1,"robots":[]}"#, "format"),
            (
                r#"{"format":"robot-server-state","version":9,"robots":[]}"#,
                "version 9",
            ),
            (
                r#"{"format":"robot-server-state","version":1,"robots":[{"name":"a","color":""},{"name":"a","color":""}]}"#,
                "twice",
            ),
            (
                r#"{"format":"robot-server-state","version":1,"robots":[{"name":"","color":""}]}"#,
                "empty",
            ),
        ];
        for (content, needle) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("robots.json");
            fs::write(&path, content).unwrap();
            let err = Store::open(Some(&path), Counter::default()).err().unwrap();
            let text = err.to_string();
            assert!(matches!(err, LoadError::Corrupt { .. }), "{text}");
            assert!(text.contains(needle), "{content:?}: {text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert_eq!(fs::read_to_string(&path).unwrap(), *content);
        }
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Robots may be private: only the server's user reads the file.
    #[test]
    fn the_state_file_is_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robots.json");
        let store = open(&path);
        block_on(store.change(Change::Create(Robot::new("a", "b")))).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    /// Whoever can write the directory cannot make the server write
    /// elsewhere by planting a symlink where the temporary file goes.
    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        let path = dir.path().join("robots.json");
        let store = open(&path);
        // The name the temporary file had before it was unique.
        std::os::unix::fs::symlink(&victim, dir.path().join("robots.json.tmp")).unwrap();
        block_on(store.change(Change::Create(Robot::new("a", "b")))).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        drop(store);
        let reopened = open(&path);
        assert_eq!(all(&reopened), vec![Robot::new("a", "b")]);
    }

    /// A crash leaves its temporary file behind; the next start removes
    /// it, and nothing else.
    #[test]
    fn temporary_files_left_by_a_crash_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robots.json");
        let leftovers = [".robots.json.a1B2c3.tmp", "robots.json.tmp"];
        let others = [
            ".other.json.a1B2c3.tmp",
            "robots.json.bak",
            ".robots.json.keep",
        ];
        for name in leftovers.iter().chain(&others) {
            fs::write(dir.path().join(name), "{").unwrap();
        }
        let _store = open(&path);
        for name in leftovers {
            assert!(!dir.path().join(name).exists(), "{name} is still there");
        }
        for name in others {
            assert!(dir.path().join(name).exists(), "{name} was removed");
        }
    }

    /// The robots a state file holds, read as a restarted server would.
    fn on_disk(path: &Path) -> Vec<Robot> {
        all(&open(path))
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    /// A failure at each step of a write: what the client is answered,
    /// what the server then serves, and what a restarted server reads all
    /// agree, and the file is always the old or the new state.
    #[test]
    fn a_failed_write_is_answered_as_what_the_file_holds() {
        let old = vec![Robot::new("kept", "red")];
        let new = vec![Robot::new("added", "blue"), Robot::new("kept", "red")];
        for step in [Step::WriteTemp, Step::Rename, Step::SyncDir] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("robots.json");
            let unsynced = Counter::default();
            let store = Store::open(Some(&path), unsynced.clone()).unwrap();
            block_on(store.change(Change::Create(Robot::new("kept", "red")))).unwrap();
            store.fail_next_write(Fault { step, crash: false });
            let answer = block_on(store.change(Change::Create(Robot::new("added", "blue"))));
            let served = all(&store);
            drop(store);
            let disk = on_disk(&path);
            match step {
                // Not renamed: nothing changed, and the client is told so.
                Step::WriteTemp | Step::Rename => {
                    let err = answer.unwrap_err();
                    assert!(matches!(err, StoreError::Persist { .. }), "{step:?}: {err}");
                    assert_eq!(disk, old, "{step:?}");
                    assert_eq!(unsynced.get(), 0);
                }
                // Renamed: the change is in the file, so it is done; only
                // its durability is unknown, and that is counted.
                Step::SyncDir => {
                    answer.unwrap();
                    assert_eq!(disk, new, "{step:?}");
                    assert_eq!(unsynced.get(), 1);
                }
            }
            assert_eq!(served, disk, "{step:?}: served and saved differ");
            assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "{step:?}");
        }
    }

    /// A crash at each step: a restarted server reads the old or the new
    /// state, never a torn one, and removes what the crash left.
    #[test]
    fn a_crash_at_any_step_leaves_the_old_or_the_new_state() {
        let old = vec![Robot::new("kept", "red")];
        let new = vec![Robot::new("kept", "red"), Robot::new("zz", "blue")];
        for (step, expected) in [
            (Step::WriteTemp, &old),
            (Step::Rename, &old),
            (Step::SyncDir, &new),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("robots.json");
            let store = open(&path);
            block_on(store.change(Change::Create(Robot::new("kept", "red")))).unwrap();
            store.fail_next_write(Fault { step, crash: true });
            // A crashed server answers nothing: only the disk counts.
            let _ = block_on(store.change(Change::Create(Robot::new("zz", "blue"))));
            drop(store);
            let left = leftovers(dir.path());
            match step {
                Step::WriteTemp | Step::Rename => assert_eq!(left.len(), 1, "{step:?}: {left:?}"),
                Step::SyncDir => assert_eq!(left, Vec::<String>::new(), "{step:?}"),
            }
            assert_eq!(&on_disk(&path), expected, "{step:?}");
            assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "{step:?}");
        }
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robots.json");
        let store = open(&path);
        block_on(store.change(Change::Create(Robot::new("kept", "red")))).unwrap();
        for change in [
            Change::Create(Robot::new("lost", "blue")),
            Change::Delete("kept".into()),
            Change::Replace {
                name: "kept".into(),
                robot: Robot::new("renamed", "c"),
            },
        ] {
            store.fail_next_write(Fault {
                step: Step::Rename,
                crash: false,
            });
            let err = block_on(store.change(change)).unwrap_err();
            assert!(matches!(err, StoreError::Persist { .. }), "{err}");
            assert_eq!(all(&store), vec![Robot::new("kept", "red")]);
        }
        drop(store);
        assert_eq!(on_disk(&path), vec![Robot::new("kept", "red")]);
    }
}
