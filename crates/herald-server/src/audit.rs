//! The audit log as the server uses it: signed checkpoints and verification of the one
//! chain (the API and the dashboard both call these).

use crate::state::AppState;
use herald_core::audit::{ChainVerifier, Verification};
use herald_store::StoreError;

/// Walks the whole chain (the API and the dashboard share this).
pub async fn verify_chain(state: &AppState) -> Result<Verification, StoreError> {
    let v = ChainVerifier::with_public_key(&state.signer.public_key());
    herald_store::verify_audit(state.store.as_ref(), v).await
}

/// Appends a signed audit checkpoint if anything happened since the last one.
pub async fn checkpoint(state: &AppState) -> Option<i64> {
    let signer = state.signer.clone();
    let sign: herald_store::CheckpointFn =
        Box::new(move |seq, hash| signer.checkpoint_detail(seq, hash));
    match state
        .store
        .append_checkpoint(sign, herald_core::clock::now_ms())
        .await
    {
        Ok(seq) => seq,
        Err(e) => {
            tracing::warn!(error = %e, "appending an audit checkpoint failed");
            None
        }
    }
}
