//! Compiled components, cached by (sha256 of the component, engine
//! compatibility hash): in memory always, and on disk when a directory is
//! configured. Only artifacts this host wrote are ever deserialized.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Mutex;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::LoadError;

/// The compiled-component cache.
pub struct ArtifactCache {
    engine: Engine,
    engine_hash: String,
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<String, Component>>,
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
    pub fn get_or_compile(&self, sha256: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        if let Some(component) = self.lock().get(sha256) {
            return Ok(component.clone());
        }
        let component = match self.read_disk(sha256) {
            Some(component) => component,
            None => {
                let artifact = self
                    .engine
                    .precompile_component(bytes)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
                self.write_disk(sha256, &artifact);
                self.deserialize(&artifact)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?
            }
        };
        self.lock().insert(sha256.to_owned(), component.clone());
        Ok(component)
    }

    /// The compiled component whose source has hex sha256 `sha256`, if it
    /// is in memory or on disk; never compiles.
    pub fn get(&self, sha256: &str) -> Option<Component> {
        if let Some(component) = self.lock().get(sha256) {
            return Some(component.clone());
        }
        let component = self.read_disk(sha256)?;
        self.lock().insert(sha256.to_owned(), component.clone());
        Some(component)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{}.cwasm", self.engine_hash)))
    }

    #[allow(unsafe_code)]
    fn read_disk(&self, sha256: &str) -> Option<Component> {
        let path = self.path(sha256)?;
        if !path.exists() {
            return None;
        }
        // SAFETY: as in `deserialize`; the file is mapped rather than read,
        // and this host only ever replaces an artifact by renaming a new
        // file over it, so a mapped file is never modified.
        match unsafe { Component::deserialize_file(&self.engine, &path) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(%sha256, error = %err, "ignoring unusable cached artifact");
                None
            }
        }
    }

    fn write_disk(&self, sha256: &str, artifact: &[u8]) {
        let Some(path) = self.path(sha256) else {
            return;
        };
        // Write then rename, so a crash never leaves a torn artifact behind.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if let Err(err) = std::fs::write(&tmp, artifact).and_then(|()| std::fs::rename(&tmp, &path))
        {
            tracing::warn!(%sha256, error = %err, "could not persist compiled plugin");
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
