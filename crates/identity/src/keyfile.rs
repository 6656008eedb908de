//! The node key on disk: a 32-byte secret seed in the data dir, readable by its owner only (mode 0600).

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::{Error, Keypair};

/// File name of the secret key inside a data dir.
pub const KEY_FILE_NAME: &str = "node.key";

impl Keypair {
    /// Loads the key from `dir/node.key`, or creates and saves a new one. Returns whether it was created.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), Error> {
        let path = dir.join(KEY_FILE_NAME);
        if path.exists() {
            return Ok((Self::load(&path)?, false));
        }
        let keypair = Self::generate();
        keypair.save(&path)?;
        Ok((keypair, true))
    }

    /// Loads the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::KeyFileIo {
            path: path.display().to_string(),
            source,
        };
        let text = fs::read_to_string(path).map_err(io)?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| Error::KeyFileMalformed {
            path: path.display().to_string(),
            problem: "expected 64 hexadecimal characters".to_owned(),
        })?;
        Ok(Self::from_seed(seed))
    }

    /// Writes the secret seed to `path` with mode 0600, durably (write to a temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::KeyFileIo {
            path: path.display().to_string(),
            source,
        };
        let temp = path.with_extension("key.tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temp).map_err(io)?;
        file.write_all(hex::encode(self.secret_bytes()).as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&temp, path).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (created, was_new) = Keypair::load_or_create(dir.path()).expect("create");
        assert!(was_new);
        let (loaded, was_new) = Keypair::load_or_create(dir.path()).expect("load");
        assert!(!was_new);
        assert_eq!(created.public(), loaded.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE_NAME))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn malformed_key_file_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join(KEY_FILE_NAME), "nope").expect("write");
        let error = Keypair::load_or_create(dir.path()).expect_err("malformed");
        assert!(error.to_string().contains("malformed"), "{error}");
    }
}
