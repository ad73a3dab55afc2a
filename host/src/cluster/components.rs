//! Components shared by a cluster's hosts: kept in the JetStream object store
//! `carshare_components` under their SHA-256, so that a host meeting a swap in the log fetches
//! the code it names, whichever host the swap was made on.

use tokio::io::AsyncReadExt;

use super::Cluster;

impl Cluster {
    /// Stores `bytes` under `digest` (their SHA-256), unless it is there already.
    pub async fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), String> {
        let store = &self.shared.components;
        if store.info(digest).await.is_ok() {
            return Ok(());
        }
        let mut reader = bytes;
        store
            .put(digest, &mut reader)
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot store the component in carshare_components: {e}"))
    }

    /// The component stored under `digest`.
    pub async fn get_component(&self, digest: &str) -> Result<Vec<u8>, String> {
        let mut object = self
            .shared
            .components
            .get(digest)
            .await
            .map_err(|e| format!("cannot fetch component {digest} from carshare_components: {e}"))?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| format!("cannot read component {digest}: {e}"))?;
        Ok(bytes)
    }
}
