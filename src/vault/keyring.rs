//! The key ring: the data keys, each wrapped by the key-encryption key, in an SQLite file of
//! its own — never in the store, so no store backup, dump, standby or snapshot of the
//! database holds a usable key. A data key serves one scope (an owner and what of it is
//! sealed, e.g. `changxing/project`) and one generation of it; a ciphertext names its key by
//! the key's id. Unwrapped keys are kept in memory once used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{Connection, OptionalExtension, params};

use super::VaultError;
use super::cipher::{Algorithm, Cipher, random};
use super::kek::Kek;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS keys (
    id         INTEGER PRIMARY KEY,
    scope      TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    algorithm  TEXT    NOT NULL,
    -- The key-encryption key that wrapped it (its id), and the wrapped key; NULL once the
    -- key was destroyed.
    kek        TEXT    NOT NULL,
    wrapped    BLOB,
    created    INTEGER NOT NULL,
    destroyed  INTEGER,
    UNIQUE (scope, generation)
);
-- The key-encryption key the ring's keys are wrapped with, changed with them by a rotation
-- (so a process that makes a key while another rotates wraps it with the new one).
CREATE TABLE IF NOT EXISTS wrapping (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    kek TEXT    NOT NULL
);
"#;

/// A key's row: scope, generation, algorithm, wrapped key (none once destroyed), when it was
/// destroyed, and the key-encryption key that wrapped it.
type KeyRow = (String, i64, String, Option<Vec<u8>>, Option<i64>, String);

/// The data keys of one gateway.
pub struct KeyRing {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// The key-encryption key; replaced when a rotation (`keys rotate`, maybe by another
    /// process) rewrapped the ring.
    kek: RwLock<Arc<Kek>>,
    /// Keys unwrapped so far, by id.
    keys: RwLock<HashMap<u64, Arc<Cipher>>>,
    /// The id of each scope's current key.
    current: RwLock<HashMap<String, u64>>,
    /// The ring's `data_version` when last looked at.
    seen: std::sync::atomic::AtomicI64,
    /// When it was opened, and when reads last looked at `data_version` (ms after it).
    opened: std::time::Instant,
    looked: std::sync::atomic::AtomicI64,
}

/// How often a process looks whether another changed the ring: a key another replica rotated
/// or destroyed is given up by this one at most this long after (an erasure waits for it
/// before its last pass).
pub const REREAD: std::time::Duration = std::time::Duration::from_millis(100);

/// How many keys a ring holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingCounts {
    pub live: u64,
    pub destroyed: u64,
}

impl KeyRing {
    /// Opens (creating if needed, readable by its owner only) the ring at `path`, checking
    /// that `kek` is the key its live keys were wrapped with.
    pub fn open(path: &Path, kek: Kek) -> Result<KeyRing, VaultError> {
        let shown = path.display().to_string();
        let fresh = !path.exists();
        let conn = Connection::open(path)
            .map_err(|e| VaultError::Ring(format!("cannot open the key ring {shown}: {e}")))?;
        if fresh {
            restrict(path)?;
        }
        conn.pragma_update(None, "secure_delete", "ON")
            .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(10)))
            .and_then(|_| conn.execute_batch(SCHEMA))
            .map_err(|e| VaultError::Ring(format!("{shown}: {e}")))?;
        let live: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM keys WHERE wrapped IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .map_err(|e| VaultError::Ring(format!("{shown}: {e}")))?;
        let kek = match ring_kek(&conn).map_err(|e| VaultError::Ring(format!("{shown}: {e}")))? {
            Some(id) if id != kek.id && live > 0 => finish_rotation(&shown, kek, &id)?,
            _ => kek,
        };
        // A ring with no live key yet takes the key it is opened with.
        conn.execute(
            "INSERT INTO wrapping (one, kek) VALUES (1, ?1) \
             ON CONFLICT (one) DO UPDATE SET kek = ?1 WHERE ?2 = 0",
            params![kek.id, live],
        )
        .map_err(|e| VaultError::Ring(format!("{shown}: {e}")))?;
        let version: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| VaultError::Ring(format!("{shown}: {e}")))?;
        Ok(KeyRing {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            kek: RwLock::new(Arc::new(kek)),
            keys: RwLock::new(HashMap::new()),
            current: RwLock::new(HashMap::new()),
            seen: std::sync::atomic::AtomicI64::new(version),
            opened: std::time::Instant::now(),
            looked: std::sync::atomic::AtomicI64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key-encryption key.
    pub fn kek(&self) -> Arc<Kek> {
        self.kek.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The id of the key-encryption key.
    pub fn kek_id(&self) -> String {
        self.kek().id.clone()
    }

    /// The key-encryption key the ring's keys are wrapped with now (`ring`, its id): the one
    /// held, or — after another process rotated it — the one its file (or the file staged
    /// beside it) holds now.
    fn kek_for(&self, ring: &str) -> Result<Arc<Kek>, VaultError> {
        let held = self.kek();
        if held.id == ring {
            return Ok(held);
        }
        let files = if held.is_file() {
            vec![held.source.clone(), staged(&held.source)]
        } else {
            Vec::new()
        };
        for path in files {
            if let Ok(kek) = Kek::from_file(&path)
                && kek.id == ring
            {
                let kek = Arc::new(kek.from(&held.source));
                *self.kek.write().unwrap_or_else(|e| e.into_inner()) = kek.clone();
                tracing::warn!(
                    kek = ring,
                    "the key ring was rewrapped by another process; following its new key-encryption key"
                );
                return Ok(kek);
            }
        }
        Err(VaultError::Kek(format!(
            "the key ring {} is wrapped by the key-encryption key {ring}, which {} does not hold (it holds {})",
            self.path.display(),
            held.source.display(),
            held.id
        )))
    }

    /// The key the key file holds now (a rotation may have replaced it while the ring held no
    /// key to show it), held from then on; a token's key as held.
    fn kek_in_file(&self) -> Result<Arc<Kek>, VaultError> {
        let held = self.kek();
        if !held.is_file() {
            return Ok(held);
        }
        let now = Kek::from_file(&held.source)?;
        if now.id == held.id {
            return Ok(held);
        }
        let now = Arc::new(now);
        *self.kek.write().unwrap_or_else(|e| e.into_inner()) = now.clone();
        Ok(now)
    }

    /// Wraps every live data key anew with `new`, in one transaction (the old wrapped bytes
    /// are overwritten: `secure_delete`), and holds `new` from then on. Returns how many keys.
    pub fn rewrap(&self, new: Kek) -> Result<u64, VaultError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.failed(e))?;
        let old = match ring_kek(&tx).map_err(|e| self.failed(e))? {
            Some(id) => self.kek_for(&id)?,
            None => self.kek(),
        };
        let rows: Vec<(i64, String, i64, String, Vec<u8>)> = tx
            .prepare(
                "SELECT id, scope, generation, algorithm, wrapped FROM keys WHERE wrapped IS NOT NULL",
            )
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                    .collect::<Result<_, _>>()
            })
            .map_err(|e| self.failed(e))?;
        for (id, scope, generation, algorithm, wrapped) in &rows {
            let algorithm = Algorithm::parse(algorithm).ok_or_else(|| {
                VaultError::Ring(format!("key {id} names the algorithm `{algorithm}`"))
            })?;
            let aad = wrap_aad(*id as u64, scope, *generation, algorithm);
            let dek = old.unwrap(&aad, wrapped)?;
            tx.execute(
                "UPDATE keys SET wrapped = ?1, kek = ?2 WHERE id = ?3",
                params![new.wrap(&aad, &dek)?, new.id, id],
            )
            .map_err(|e| self.failed(e))?;
        }
        tx.execute(
            "INSERT INTO wrapping (one, kek) VALUES (1, ?1) ON CONFLICT (one) DO UPDATE SET kek = ?1",
            params![new.id],
        )
        .and_then(|_| tx.commit())
        .map_err(|e| self.failed(e))?;
        drop(conn);
        *self.kek.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        Ok(rows.len() as u64)
    }

    /// The current key of `scope` (its id and cipher), made now — of `algorithm` — when the
    /// scope has none.
    pub fn current(
        &self,
        scope: &str,
        algorithm: Algorithm,
    ) -> Result<(u64, Arc<Cipher>), VaultError> {
        let id = match self.current_id(scope)? {
            Some(id) => id,
            None => {
                let id = self.make(scope, algorithm, false)?;
                self.set_current(scope, id);
                id
            }
        };
        Ok((id, self.key(id)?))
    }

    /// The id of `scope`'s current key, if it has one (never makes one).
    pub fn current_id(&self, scope: &str) -> Result<Option<u64>, VaultError> {
        self.version()?;
        let known = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .copied();
        if known.is_some() {
            return Ok(known);
        }
        let live = self.live_key_of(scope)?;
        if let Some(id) = live {
            self.set_current(scope, id);
        }
        Ok(live)
    }

    /// Makes the next generation of `scope`'s key its current one; the earlier ones stay
    /// until [`KeyRing::destroy_retired`]. Returns the new key's id.
    pub fn rotate(&self, scope: &str, algorithm: Algorithm) -> Result<u64, VaultError> {
        let id = self.make(scope, algorithm, true)?;
        self.set_current(scope, id);
        Ok(id)
    }

    /// Destroys every key of `scope` but its current one: the wrapped key is overwritten in
    /// the ring (SQLite's `secure_delete` zeroes the old bytes) and dropped from memory.
    /// Returns the ids destroyed.
    pub fn destroy_retired(&self, scope: &str) -> Result<Vec<u64>, VaultError> {
        let current = self.current_id(scope)?;
        let conn = self.lock();
        let ids: Vec<i64> = conn
            .prepare(
                "UPDATE keys SET wrapped = NULL, destroyed = ?1 \
                 WHERE scope = ?2 AND wrapped IS NOT NULL AND id <> ?3 RETURNING id",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![
                        crate::domain::now_micros(),
                        scope,
                        current.map(|c| c as i64).unwrap_or(-1)
                    ],
                    |r| r.get(0),
                )?
                .collect::<Result<_, _>>()
            })
            .map_err(|e| self.failed(e))?;
        drop(conn);
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        for id in &ids {
            keys.remove(&(*id as u64));
        }
        if !ids.is_empty() {
            tracing::warn!(scope, keys = ?ids, "data keys destroyed: what they sealed is erased wherever it is kept");
        }
        Ok(ids.into_iter().map(|id| id as u64).collect())
    }

    fn set_current(&self, scope: &str, id: u64) {
        self.current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.to_string(), id);
    }

    /// The ring's version as last seen: it changes when another process changed the ring (a
    /// rotation, an erasure). Reads look for such changes at most every [`REREAD`].
    pub fn version(&self) -> Result<i64, VaultError> {
        let now = self.opened.elapsed().as_millis() as i64;
        let last = self.looked.load(std::sync::atomic::Ordering::Relaxed);
        if now - last >= REREAD.as_millis() as i64 {
            self.looked.store(now, std::sync::atomic::Ordering::Relaxed);
            self.refresh()?;
        }
        Ok(self.seen.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Forgets what it knows of the ring when another process changed it (another replica
    /// rotated or destroyed a key), so a write never seals under a key destroyed elsewhere.
    fn refresh(&self) -> Result<(), VaultError> {
        let version: i64 = self
            .lock()
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| self.failed(e))?;
        let seen = self
            .seen
            .swap(version, std::sync::atomic::Ordering::Relaxed);
        if seen != version {
            self.current
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            self.keys.write().unwrap_or_else(|e| e.into_inner()).clear();
        }
        Ok(())
    }

    /// The key `id`, unwrapped.
    pub fn key(&self, id: u64) -> Result<Arc<Cipher>, VaultError> {
        self.version()?;
        if let Some(key) = self.keys.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(key.clone());
        }
        let row: Option<KeyRow> = self
            .lock()
            .query_row(
                "SELECT scope, generation, algorithm, wrapped, destroyed, kek FROM keys WHERE id = ?1",
                params![id as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()
            .map_err(|e| self.failed(e))?;
        let Some((scope, generation, algorithm, wrapped, destroyed, kek)) = row else {
            return Err(VaultError::UnknownKey(id));
        };
        let Some(wrapped) = wrapped else {
            return Err(VaultError::Destroyed {
                id,
                time: destroyed.unwrap_or_default(),
            });
        };
        let algorithm = Algorithm::parse(&algorithm).ok_or_else(|| {
            VaultError::Ring(format!("key {id} names the algorithm `{algorithm}`"))
        })?;
        let dek = self
            .kek_for(&kek)?
            .unwrap(&wrap_aad(id, &scope, generation, algorithm), &wrapped)?;
        let cipher = Arc::new(Cipher::new(algorithm, &dek)?);
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, cipher.clone());
        Ok(cipher)
    }

    /// How many keys are live and destroyed.
    pub fn counts(&self) -> Result<RingCounts, VaultError> {
        self.lock()
            .query_row(
                "SELECT COUNT(*) FILTER (WHERE wrapped IS NOT NULL), \
                        COUNT(*) FILTER (WHERE wrapped IS NULL) FROM keys",
                [],
                |r| {
                    Ok(RingCounts {
                        live: r.get::<_, i64>(0)? as u64,
                        destroyed: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .map_err(|e| self.failed(e))
    }

    fn live_key_of(&self, scope: &str) -> Result<Option<u64>, VaultError> {
        self.lock()
            .query_row(
                "SELECT id FROM keys WHERE scope = ?1 AND wrapped IS NOT NULL \
                 ORDER BY generation DESC LIMIT 1",
                params![scope],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|id| id.map(|id| id as u64))
            .map_err(|e| self.failed(e))
    }

    /// Makes the next generation of `scope`'s key (unless, without `force`, the scope has a
    /// live key: another process sharing the ring made it meanwhile, and that one is used).
    fn make(&self, scope: &str, algorithm: Algorithm, force: bool) -> Result<u64, VaultError> {
        let mut dek = vec![0u8; algorithm.key_bytes()];
        random(&mut dek)?;
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.failed(e))?;
        let (generation, id): (i64, i64) = tx
            .query_row(
                "SELECT COALESCE(MAX(generation), 0) + 1, COALESCE((SELECT MAX(id) FROM keys), 0) + 1 \
                 FROM keys WHERE scope = ?1",
                params![scope],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.failed(e))?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM keys WHERE scope = ?1 AND wrapped IS NOT NULL \
                 ORDER BY generation DESC LIMIT 1",
                params![scope],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.failed(e))?;
        if let Some(id) = existing.filter(|_| !force) {
            return Ok(id as u64);
        }
        let kek = match ring_kek(&tx).map_err(|e| self.failed(e))? {
            Some(ring) => self.kek_for(&ring)?,
            None => self.kek_in_file()?,
        };
        let wrapped = kek.wrap(&wrap_aad(id as u64, scope, generation, algorithm), &dek)?;
        tx.execute(
            "INSERT INTO keys (id, scope, generation, algorithm, kek, wrapped, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                scope,
                generation,
                algorithm.as_str(),
                kek.id,
                wrapped,
                crate::domain::now_micros()
            ],
        )
        .and_then(|_| tx.commit())
        .map_err(|e| self.failed(e))?;
        tracing::info!(
            scope,
            generation,
            key = id,
            algorithm = algorithm.as_str(),
            "data key made"
        );
        Ok(id as u64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self, e: rusqlite::Error) -> VaultError {
        VaultError::Ring(format!("{}: {e}", self.path.display()))
    }
}

/// The key-encryption key the ring's keys are wrapped with: as the ring records it, or (a
/// ring made before it did) as its live keys say.
fn ring_kek(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let recorded = conn
        .query_row("SELECT kek FROM wrapping WHERE one = 1", [], |r| r.get(0))
        .optional()?;
    if recorded.is_some() {
        return Ok(recorded);
    }
    conn.query_row(
        "SELECT kek FROM keys WHERE wrapped IS NOT NULL LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()
}

/// Where `keys rotate` writes the new key-encryption key before it rewraps the ring, and from
/// where it then moves it over the key file.
pub fn staged(kek_file: &Path) -> PathBuf {
    let mut name = kek_file.as_os_str().to_os_string();
    name.push(".new");
    PathBuf::from(name)
}

/// At open, a ring wrapped by `ring` while the key file holds `kek`: a rotation that
/// rewrapped the ring but stopped before moving the new key over the file. Finishes it when
/// the staged file holds the ring's key; otherwise refuses.
fn finish_rotation(shown: &str, kek: Kek, ring: &str) -> Result<Kek, VaultError> {
    let next = staged(&kek.source);
    match Kek::from_file(&next) {
        Ok(new) if new.id == ring => {
            std::fs::rename(&next, &kek.source).map_err(|e| {
                VaultError::Kek(format!(
                    "cannot move {} over {}: {e}",
                    next.display(),
                    kek.source.display()
                ))
            })?;
            tracing::warn!(
                kek = ring,
                "an interrupted key rotation was finished: the new key-encryption key moved over the key file"
            );
            Ok(new.from(&kek.source))
        }
        _ => Err(VaultError::Kek(format!(
            "the key ring {shown} holds data keys wrapped by the key-encryption key {ring}, but {} holds the key {}: configure the key file the ring was made with",
            kek.source.display(),
            kek.id
        ))),
    }
}

/// What a wrapped data key is bound to: its id, scope, generation and algorithm.
fn wrap_aad(id: u64, scope: &str, generation: i64, algorithm: Algorithm) -> Vec<u8> {
    format!(
        "yrd-gateway data key\0{id}\0{scope}\0{generation}\0{}",
        algorithm.as_str()
    )
    .into_bytes()
}

#[cfg(unix)]
fn restrict(path: &Path) -> Result<(), VaultError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| VaultError::Ring(format!("cannot restrict {}: {e}", path.display())))
}

#[cfg(not(unix))]
fn restrict(_: &Path) -> Result<(), VaultError> {
    Ok(())
}
