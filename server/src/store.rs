//! The robots, in memory and optionally in a state file.
//!
//! With a state file every change is written durably before it is visible:
//! the whole set goes to a temporary file, which is fsynced, renamed over
//! the state file, and the directory fsynced. A crash at any point leaves
//! either the old or the new state file, never a torn one; a temporary
//! file left behind is overwritten by the next change.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use robot_api::{Robot, RobotList};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

/// Written into the state file so a stray JSON file is not mistaken for one.
const FORMAT: &str = "robot-server-state";
const VERSION: u32 = 1;

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
}

/// The durable copy, and the lock that keeps it to one writer at a time.
struct StateFile {
    path: PathBuf,
    temp: PathBuf,
    dir: PathBuf,
    /// Held for the life of the process: another server on the same file
    /// would overwrite our changes.
    _lock: File,
    /// Taken for a whole change (check, write, apply), so changes are
    /// written in the order they become visible.
    turn: Mutex<()>,
}

impl Store {
    /// An empty store that forgets everything on exit, like the reference.
    pub fn in_memory() -> Self {
        Self::with(Robots::new(), None)
    }

    /// A store kept in `path` when given, else in memory. A missing file
    /// starts empty; a file that is not a whole state file is an error.
    pub fn open(path: Option<&Path>) -> Result<Self, LoadError> {
        let Some(path) = path else {
            return Ok(Self::in_memory());
        };
        let state = StateFile::lock(path)?;
        let robots = state.load()?;
        // Written back at once: proves the directory is writable before
        // the first client's change depends on it.
        state
            .write(&Snapshot {
                robots: &robots,
                change: None,
            })
            .map_err(|source| LoadError::Write {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self::with(robots, Some(state)))
    }

    fn with(robots: Robots, state: Option<StateFile>) -> Self {
        Self {
            inner: Arc::new(Inner {
                robots: RwLock::new(robots),
                state,
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

    /// Up to `limit` robots with names after `after`, in name order.
    pub fn list(&self, after: Option<&str>, limit: usize) -> RobotList {
        let robots = self.read();
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut page = robots.range::<str, _>((start, Bound::Unbounded));
        let items: Vec<Robot> = page
            .by_ref()
            .take(limit)
            .map(|(name, color)| Robot::new(name.clone(), color.clone()))
            .collect();
        let next = match (page.next(), items.last()) {
            (Some(_), Some(last)) => Some(last.name.clone()),
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
        {
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
                })?;
        }
        change.apply(&mut self.write());
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
        Ok(Self {
            path: path.to_owned(),
            temp: sibling(".tmp"),
            dir,
            _lock: lock,
            turn: Mutex::new(()),
        })
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

    fn write(&self, snapshot: &Snapshot<'_>) -> io::Result<()> {
        let bytes = serde_json::to_vec(snapshot).map_err(io::Error::other)?;
        let mut temp = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&self.temp)?;
        temp.write_all(&bytes)?;
        temp.sync_all()?;
        drop(temp);
        fs::rename(&self.temp, &self.path)?;
        // The rename itself is durable only once the directory is synced.
        File::open(&self.dir)?.sync_all()
    }
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
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        store.list(None, usize::MAX).items
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
            let durable = Store::open(Some(&path)).unwrap();
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
                            let page = durable.list(after.as_deref(), limit);
                            let rest: Vec<Robot> = model_list(&model)
                                .into_iter()
                                .filter(|r| after.as_deref().is_none_or(|a| r.name.as_str() > a))
                                .collect();
                            prop_assert_eq!(&page.items[..], &rest[..rest.len().min(limit)]);
                            prop_assert_eq!(page.next.is_some(), rest.len() > limit);
                            prop_assert_eq!(page, memory.list(after.as_deref(), limit));
                        }
                    }
                }
                Ok(())
            })?;
            prop_assert_eq!(all(&memory), model_list(&model));
            prop_assert_eq!(all(&durable), model_list(&model));
            drop(durable);
            let reopened = Store::open(Some(&path)).unwrap();
            prop_assert_eq!(all(&reopened), model_list(&model));
        }

        /// Paging through the listing visits every robot once, in order.
        #[test]
        fn paging_visits_everything_once(
            names in prop::collection::btree_set(".{1,8}", 0..30),
            limit in 1usize..7,
        ) {
            let store = Store::in_memory();
            block_on(async {
                for n in &names {
                    store.change(Change::Create(Robot::new(n.clone(), "c"))).await.unwrap();
                }
            });
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store.list(after.as_deref(), limit);
                prop_assert!(page.items.len() <= limit);
                seen.extend(page.items.into_iter().map(|r| r.name));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            prop_assert_eq!(seen, names.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_missing_file_starts_empty_and_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robots.json");
        let store = Store::open(Some(&path)).unwrap();
        assert_eq!(store.len(), 0);
        assert!(path.exists());
    }

    #[test]
    fn a_second_server_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robots.json");
        let _first = Store::open(Some(&path)).unwrap();
        let err = Store::open(Some(&path)).err().unwrap();
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
            let err = Store::open(Some(&path)).err().unwrap();
            let text = err.to_string();
            assert!(matches!(err, LoadError::Corrupt { .. }), "{text}");
            assert!(text.contains(needle), "{content:?}: {text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert_eq!(fs::read_to_string(&path).unwrap(), *content);
        }
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("robots.json");
        let store = Store::open(Some(&path)).unwrap();
        block_on(store.change(Change::Create(Robot::new("kept", "red")))).unwrap();
        // A directory where the temporary file goes makes the next write fail.
        fs::create_dir(dir.path().join("robots.json.tmp")).unwrap();
        let err = block_on(store.change(Change::Create(Robot::new("lost", "blue")))).unwrap_err();
        assert!(matches!(err, StoreError::Persist { .. }), "{err}");
        let err = block_on(store.change(Change::Delete("kept".into()))).unwrap_err();
        assert!(matches!(err, StoreError::Persist { .. }), "{err}");
        assert_eq!(all(&store), vec![Robot::new("kept", "red")]);
        drop(store);
        fs::remove_dir(dir.path().join("robots.json.tmp")).unwrap();
        let reopened = Store::open(Some(&path)).unwrap();
        assert_eq!(all(&reopened), vec![Robot::new("kept", "red")]);
    }
}
