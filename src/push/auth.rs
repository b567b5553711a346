//! Who may watch a namespace's views on the push endpoint ([`server`](super::server)).
//!
//! [`PushAuth::Kubernetes`] (the default) does what kube-rbac-proxy does: the client presents a Kubernetes
//! bearer token (`Authorization: Bearer <token>`, e.g. a ServiceAccount token, or the kubeconfig's token
//! `kappa-operator watch` sends), the operator asks the API server who it is (`TokenReview`) and whether
//! that subject may `watch` `materializedviews.kappa.dev` in the requested namespace
//! (`SubjectAccessReview`). So a user reaches through push exactly the views RBAC lets them watch.
//!
//! | request | answer |
//! |---|---|
//! | no bearer token | 401, saying what to send |
//! | token the API server does not authenticate | 401, with the API server's reason |
//! | subject not allowed to watch materializedviews in the namespace | 403, naming the subject, the namespace and the RBAC to grant (the chart's `kappa-viewer`/`kappa-editor` ClusterRoles, bound in that namespace) |
//! | TokenReview or SubjectAccessReview failing | 503: try again |
//!
//! [`PushAuth::StaticToken`] (one shared secret, `--push-auth token`) and [`PushAuth::None`] are explicit
//! single-tenant options: whoever has the token (or reaches the port) may watch every namespace.
//!
//! The operator's ServiceAccount needs `create` on `tokenreviews` and `subjectaccessreviews` (the chart's
//! ClusterRole grants it).

use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::PostParams;

/// How the push endpoint authorizes clients.
#[derive(Clone)]
pub enum PushAuth {
    /// Open to whoever reaches the endpoint (`--push-auth none`): single-tenant clusters only.
    None,
    /// One shared bearer token (`--push-auth token`, `--push-token-file`): single-tenant clusters only.
    StaticToken(Arc<str>),
    /// Per namespace, by the API server: TokenReview, then SubjectAccessReview (see the module docs).
    Kubernetes(kube::Client),
}

impl std::fmt::Debug for PushAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PushAuth::None => "None",
            PushAuth::StaticToken(_) => "StaticToken",
            PushAuth::Kubernetes(_) => "Kubernetes",
        })
    }
}

/// Why a client was refused: the HTTP status and a message for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Refusal { status, message: message.into() }
    }
}

/// The bearer token of `headers`, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether `presented` equals `token`, compared in constant time.
fn same_token(presented: &str, token: &str) -> bool {
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PushAuth {
    /// Whether the client of `headers` may watch the views of `namespace`; `Ok` names the subject (for
    /// logs), `Err` says why not.
    pub async fn authorize(
        &self,
        headers: &axum::http::HeaderMap,
        namespace: &str,
    ) -> Result<String, Refusal> {
        match self {
            PushAuth::None => Ok("anonymous (push auth none)".into()),
            PushAuth::StaticToken(token) => match bearer(headers) {
                Some(presented) if same_token(presented, token) => Ok("holder of the push token".into()),
                _ => Err(Refusal::new(
                    401,
                    "the push endpoint needs `Authorization: Bearer <token>` (kappa-operator watch --token-file)",
                )),
            },
            PushAuth::Kubernetes(client) => {
                let Some(token) = bearer(headers) else {
                    return Err(Refusal::new(
                        401,
                        "the push endpoint needs `Authorization: Bearer <Kubernetes token>` (kappa-operator watch \
                         sends your kubeconfig's token; or `kubectl create token <serviceaccount>`)",
                    ));
                };
                authorize_kubernetes(client, token, namespace).await
            }
        }
    }
}

async fn authorize_kubernetes(
    client: &kube::Client,
    token: &str,
    namespace: &str,
) -> Result<String, Refusal> {
    let review = TokenReview {
        spec: TokenReviewSpec { token: Some(token.to_string()), audiences: None },
        ..TokenReview::default()
    };
    let reviewed = kube::Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            Refusal::new(
                503,
                format!("cannot check the token (TokenReview): {e}; try again"),
            )
        })?;
    let status = reviewed.status.unwrap_or_default();
    let user = match (status.authenticated, status.user) {
        (Some(true), Some(user)) => user,
        _ => {
            return Err(Refusal::new(
                401,
                format!(
                    "the Kubernetes API server did not authenticate the bearer token{}",
                    status.error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            ));
        }
    };
    let subject = user.username.clone().unwrap_or_default();
    let access = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                verb: Some("watch".into()),
                group: Some("kappa.dev".into()),
                resource: Some("materializedviews".into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let decided = kube::Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &access)
        .await
        .map_err(|e| {
            Refusal::new(
                503,
                format!("cannot check access (SubjectAccessReview): {e}; try again"),
            )
        })?;
    let allowed = decided.status.as_ref().is_some_and(|s| s.allowed);
    if !allowed {
        return Err(Refusal::new(
            403,
            format!(
                "{subject} may not watch materializedviews.kappa.dev in namespace {namespace}: a RoleBinding in \
                 {namespace} to the ClusterRole kappa-viewer (or kappa-editor) grants it"
            ),
        ));
    }
    Ok(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_token_is_compared_whole_and_a_missing_one_refused() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert_eq!(bearer(&headers), Some("s3cret"));
        assert!(same_token("s3cret", "s3cret"));
        assert!(!same_token("s3cre", "s3cret") && !same_token("s3crex", "s3cret"));
    }
}
