//! The bodies of the answers that are not a model type of their own. They live in vault-core
//! (`vault_core::model`), where clients read them back as the same types.

pub use vault_core::model::{
    ActionScope, AuditPage, ClaimedJob, ClientRevoked, CredentialRevoked, EndedLease, Frozen,
    Health, Introspection, JobResult, MintedToken, PipelineEnded, PoolPage, Released, RevokedToken,
    RotationCancelled, RotationStarted, TokenPage, TokenState,
};
