//! What every HTTP adapter builds the same way: its client, its base URL,
//! counted calls, and the `BackendError` of a failed call.

use std::future::Future;

use reqwest::Url;

use super::{Backend, BackendError, CALL_TIMEOUT, Calls, Verb};

/// Longest backend answer kept in an error, so Events and conditions stay readable.
pub const BODY_LIMIT: usize = 300;

/// A backend's answer without surrounding whitespace, cut to `BODY_LIMIT`
/// characters on a character boundary.
pub fn truncate(body: &str) -> String {
    cut(body.trim(), "…")
}

fn cut(body: &str, marker: &str) -> String {
    match body.char_indices().nth(BODY_LIMIT) {
        Some((end, _)) => format!("{}{marker}", &body[..end]),
        None => body.to_owned(),
    }
}

impl Backend {
    pub(crate) fn unreachable(self, source: reqwest::Error) -> BackendError {
        BackendError::Unreachable {
            backend: self,
            source,
        }
    }

    /// `action` refused with HTTP `status`; `answer`, the backend's own
    /// words, is cut short.
    pub(crate) fn refused(self, action: &str, status: u16, answer: &str) -> BackendError {
        let body = match self {
            // Keycloak's keep their whitespace and OpenBao's end in "...",
            // as they always did, so that their messages stay the same.
            Backend::Keycloak => cut(answer, "…"),
            Backend::OpenBao => cut(answer.trim(), "..."),
            _ => truncate(answer),
        };
        BackendError::Refused {
            backend: self,
            action: action.into(),
            status,
            body,
        }
    }

    pub(crate) fn unreadable(self, action: &str, detail: impl Into<String>) -> BackendError {
        BackendError::Unreadable {
            backend: self,
            action: action.into(),
            detail: detail.into(),
        }
    }

    /// `url` as the base of every request: it must have a path to append to.
    pub(crate) fn base_url(self, url: &str, action: &str) -> Result<Url, BackendError> {
        Url::parse(url)
            .ok()
            .filter(|parsed| !parsed.cannot_be_a_base())
            .ok_or_else(|| self.unreadable(action, format!("{url:?} is not an http(s) base URL")))
    }

    /// A client from `builder` whose every call ends within `CALL_TIMEOUT`.
    pub(crate) fn client(
        self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, BackendError> {
        builder
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| self.unreachable(e))
    }
}

impl Calls {
    /// Counts and times one call to `backend`; `failure` maps what
    /// the client library reports into an error naming `action`.
    pub(crate) async fn counted<T, E>(
        &self,
        backend: Backend,
        verb: Verb,
        action: &str,
        call: impl Future<Output = Result<T, E>>,
        failure: impl FnOnce(&str, E) -> BackendError,
    ) -> Result<T, BackendError> {
        self.timed(backend, verb, call)
            .await
            .map_err(|e| failure(action, e))
    }
}

/// A health probe: `request` answered within the probe timeout, with
/// anything but a server error.
pub(crate) async fn answers(
    backend: Backend,
    request: reqwest::RequestBuilder,
) -> Result<(), BackendError> {
    let response = request
        .timeout(crate::health::PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| backend.unreachable(e))?;
    let status = response.status();
    if status.is_server_error() {
        return Err(backend.refused("answer a health probe", status.as_u16(), ""));
    }
    Ok(())
}

/// `None` for what the backend answered 404 about.
pub(crate) fn absent_as_none<T>(
    result: Result<T, BackendError>,
) -> Result<Option<T>, BackendError> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(BackendError::Refused { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("  short  "), "short");
        let long = "é".repeat(BODY_LIMIT + 10);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), BODY_LIMIT + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn each_backend_cuts_refusals_as_it_always_did() {
        let body = |backend: Backend, answer: &str| match backend.refused("x", 400, answer) {
            BackendError::Refused { body, .. } => body,
            other => panic!("expected Refused, got {other:?}"),
        };
        let long = format!(" {} ", "é".repeat(BODY_LIMIT + 5));
        let keycloak = body(Backend::Keycloak, &long);
        assert_eq!(keycloak.chars().count(), BODY_LIMIT + 1);
        assert!(keycloak.starts_with(' ') && keycloak.ends_with('…'));
        assert_eq!(body(Backend::Keycloak, "short"), "short");
        let openbao = body(Backend::OpenBao, &long);
        assert_eq!(openbao.chars().count(), BODY_LIMIT + 3);
        assert!(openbao.starts_with('é') && openbao.ends_with("..."));
        for backend in [Backend::Pulsar, Backend::Edge] {
            assert_eq!(body(backend, &long), truncate(&long));
            assert_eq!(body(backend, " short\n"), "short");
        }
    }

    #[test]
    fn base_urls_need_a_path() {
        assert!(
            Backend::Pulsar
                .base_url("http://127.0.0.1:8080/", "x")
                .is_ok()
        );
        let err = Backend::Pulsar
            .base_url("not a url", "use the admin URL")
            .unwrap_err();
        assert_eq!(err.category(), "BackendUnreadable");
        assert_eq!(
            err.to_string(),
            "Pulsar answered use the admin URL with something unreadable: \
             \"not a url\" is not an http(s) base URL"
        );
    }

    #[test]
    fn only_404_is_absence() {
        assert!(
            absent_as_none::<()>(Err(Backend::OpenBao.refused("x", 404, "")))
                .unwrap()
                .is_none()
        );
        assert!(absent_as_none::<()>(Err(Backend::OpenBao.refused("x", 409, ""))).is_err());
    }
}
