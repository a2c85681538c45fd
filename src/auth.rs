//! Bearer auth for writes (contract: "Headers"). The check itself runs in the write guard
//! ([`crate::body`]) before any body byte is read, so 401 wins over 400/413/415; `WriteAuth` is what
//! puts the optional bearer scheme into the OpenAPI document and Swagger UI's "Authorize" dialog.

use poem::http::HeaderValue;
use poem_openapi::{SecurityScheme, auth::Bearer};
use subtle::ConstantTimeEq;

/// The bearer token configured as `API_TOKEN`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "opaque")]
pub struct BearerAuth(#[allow(dead_code)] Bearer);

/// Writes take a bearer token when `API_TOKEN` is set and are open otherwise.
#[derive(SecurityScheme)]
pub enum WriteAuth {
    Bearer(BearerAuth),
    #[oai(fallback)]
    Anonymous,
}

/// Whether a request may write: true when no token is configured, else when the `Authorization`
/// header carries `Bearer <token>` (scheme case-insensitive) and the token matches in constant time.
pub fn authorized(expected: Option<&str>, header: Option<&HeaderValue>) -> bool {
    let Some(expected) = expected else { return true };
    let Some(value) = header.and_then(|h| h.to_str().ok()) else { return false };
    let Some((scheme, token)) = value.trim().split_once(' ') else { return false };
    scheme.eq_ignore_ascii_case("bearer") && bool::from(token.trim().as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("header")
    }

    #[test]
    fn open_when_no_token_is_configured() {
        assert!(authorized(None, None));
    }

    #[test]
    fn token_must_match_and_scheme_is_case_insensitive() {
        let t = Some("s3cret-token");
        assert!(authorized(t, Some(&h("Bearer s3cret-token"))));
        assert!(authorized(t, Some(&h("bEaReR s3cret-token"))));
        assert!(!authorized(t, Some(&h("Bearer s3cret-tokem"))));
        assert!(!authorized(t, Some(&h("Bearer s3cret"))));
        assert!(!authorized(t, Some(&h("Basic s3cret-token"))));
        assert!(!authorized(t, Some(&h("s3cret-token"))));
        assert!(!authorized(t, None));
    }
}
