//! Compiled components, cached by (sha256 of the component, engine
//! compatibility hash): in memory always, and on disk when a directory is
//! configured. Only artifacts this host wrote are ever deserialized.
//!
//! With each component goes what the host read from its bytes before
//! compiling and cannot read from the compiled artifact: whether it declares
//! the SDK's bump allocator ([`super::arena`]). On disk that is in the file's
//! name.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Mutex;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::LoadError;
use super::arena;

/// A compiled component and what its bytes declared.
#[derive(Clone)]
pub struct Compiled {
    pub component: Component,
    /// The plugin allocates with the SDK's bump allocator.
    pub bump_alloc: bool,
}

/// The compiled-component cache.
pub struct ArtifactCache {
    engine: Engine,
    engine_hash: String,
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<String, Compiled>>,
}

impl ArtifactCache {
    /// A cache for `engine`, persisting into `dir` when given (created if
    /// missing, private to the owner).
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            engine: engine.clone(),
            engine_hash: format!("{:016x}", hasher.finish()),
            dir,
            memory: Mutex::new(HashMap::new()),
        })
    }

    /// The compiled component for `bytes` (whose hex sha256 is `sha256`):
    /// from memory, from disk, or compiled now and stored in both.
    pub fn get_or_compile(&self, sha256: &str, bytes: &[u8]) -> Result<Compiled, LoadError> {
        if let Some(compiled) = self.lock().get(sha256) {
            return Ok(compiled.clone());
        }
        let compiled = match self.read_disk(sha256) {
            Some(compiled) => compiled,
            None => {
                let artifact = self
                    .engine
                    .precompile_component(bytes)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
                let bump_alloc = arena::declares_bump_alloc(bytes);
                self.write_disk(sha256, bump_alloc, &artifact);
                let component = self
                    .deserialize(&artifact)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
                Compiled {
                    component,
                    bump_alloc,
                }
            }
        };
        self.lock().insert(sha256.to_owned(), compiled.clone());
        Ok(compiled)
    }

    /// The compiled component whose source has hex sha256 `sha256`, if it
    /// is in memory or on disk; never compiles.
    pub fn get(&self, sha256: &str) -> Option<Compiled> {
        if let Some(compiled) = self.lock().get(sha256) {
            return Some(compiled.clone());
        }
        let compiled = self.read_disk(sha256)?;
        self.lock().insert(sha256.to_owned(), compiled.clone());
        Some(compiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Compiled>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the artifact of `sha256` is kept: `<sha256>-<engine>.bump.cwasm`
    /// for a plugin that declares the bump allocator, `.plain.cwasm` for
    /// any other. An artifact of a host from before the declaration
    /// (`<sha256>-<engine>.cwasm`) is not read: compiled again from the
    /// plugin's bytes, its declaration is known, and the old file is
    /// removed when the new one is written.
    fn path(&self, sha256: &str, bump_alloc: bool) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let kind = if bump_alloc { "bump" } else { "plain" };
        Some(dir.join(self.file_name(sha256, Some(kind))))
    }

    /// `<sha256>-<engine>.<kind>.cwasm`, or without a kind the name an
    /// artifact had before the declaration.
    fn file_name(&self, sha256: &str, kind: Option<&str>) -> String {
        let engine = &self.engine_hash;
        match kind {
            Some(kind) => format!("{sha256}-{engine}.{kind}.cwasm"),
            None => format!("{sha256}-{engine}.cwasm"),
        }
    }

    #[allow(unsafe_code)]
    fn read_disk(&self, sha256: &str) -> Option<Compiled> {
        let (path, bump_alloc) = [true, false]
            .into_iter()
            .filter_map(|bump_alloc| Some((self.path(sha256, bump_alloc)?, bump_alloc)))
            .find(|(path, _)| path.exists())?;
        // SAFETY: as in `deserialize`; the file is mapped rather than read,
        // and this host only ever replaces an artifact by renaming a new
        // file over it, so a mapped file is never modified.
        match unsafe { Component::deserialize_file(&self.engine, &path) } {
            Ok(component) => Some(Compiled {
                component,
                bump_alloc,
            }),
            Err(err) => {
                tracing::warn!(%sha256, error = %err, "ignoring unusable cached artifact");
                None
            }
        }
    }

    fn write_disk(&self, sha256: &str, bump_alloc: bool, artifact: &[u8]) {
        let Some(path) = self.path(sha256, bump_alloc) else {
            return;
        };
        // Write then rename, so a crash never leaves a torn artifact behind.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if let Err(err) = std::fs::write(&tmp, artifact).and_then(|()| std::fs::rename(&tmp, &path))
        {
            tracing::warn!(%sha256, error = %err, "could not persist compiled plugin");
            return;
        }
        // The same plugin's artifact under the name used before the
        // declaration, which this host never reads: it only took space.
        let superseded = path.with_file_name(self.file_name(sha256, None));
        match std::fs::remove_file(&superseded) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(%sha256, error = %err, "could not remove a superseded artifact");
            }
            _ => {}
        }
    }

    #[allow(unsafe_code)]
    fn deserialize(&self, artifact: &[u8]) -> wasmtime::Result<Component> {
        // SAFETY: artifacts come only from `Engine::precompile_component` in
        // this process or from files this host wrote into its private cache
        // directory, keyed by the engine's compatibility hash; wasmtime
        // additionally checks the artifact header against the engine.
        unsafe { Component::deserialize(&self.engine, artifact) }
    }
}
