//! Trace configuration: the standard `OTEL_*` variables read into a `TraceConfig` (contract: "Traces",
//! the variable table), every value checked even while tracing is off. Separate from the tracer
//! because it runs once, at start-up, with the rest of `Config` (`Config::from_vars`), and owns no
//! OpenTelemetry state.

use std::time::Duration;

use opentelemetry_sdk::trace::Sampler;
use poem::http::{HeaderName, HeaderValue};

use crate::env::{ConfigError, bad, parse_num};

/// How root spans (and, for the `parentbased_*` ones, spans with a remote parent) are sampled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

/// The sampler when `OTEL_TRACES_SAMPLER` is unset: `parentbased_traceidratio` at this ratio (or at
/// `OTEL_TRACES_SAMPLER_ARG`). Why 0.1: DESIGN.md, "Traces".
pub const DEFAULT_RATIO: f64 = 0.1;

impl SamplerConfig {
    pub(super) fn sampler(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedTraceIdRatio(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
        }
    }
}

/// The validated trace configuration; `None` in `Config` when tracing is off.
#[derive(Clone)]
pub struct TraceConfig {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub endpoint: String,
    /// Sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`): often a credential, so never logged.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub service_name: String,
    pub resource: Vec<(String, String)>,
    pub sampler: SamplerConfig,
    pub schedule_delay: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
}

impl std::fmt::Debug for TraceConfig {
    // Headers carry credentials and the endpoint may carry a password: neither reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceConfig")
            .field("service_name", &self.service_name)
            .field("sampler", &self.sampler)
            .field("headers", &self.headers.len())
            .field("timeout", &self.timeout)
            .field("schedule_delay", &self.schedule_delay)
            .field("max_queue_size", &self.max_queue_size)
            .finish()
    }
}

/// `%XX` escapes (the W3C baggage encoding `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`
/// use for their values).
fn percent_decode(s: &str) -> Option<String> {
    let (bytes, mut out, mut i) = (s.as_bytes(), Vec::with_capacity(s.len()), 0);
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `key1=value1,key2=value2` with percent-encoded values; empty members are skipped.
fn parse_pairs(var: &'static str, raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut pairs = Vec::new();
    for member in raw.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (k, v) = member.split_once('=').ok_or_else(|| bad(var, format!("`{member}` is not key=value")))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(bad(var, format!("`{member}` has an empty key")));
        }
        let v = percent_decode(v.trim()).ok_or_else(|| bad(var, format!("the value of `{k}` has a bad %-escape")))?;
        pairs.push((k.to_owned(), v));
    }
    Ok(pairs)
}

impl TraceConfig {
    /// Reads the standard variables; `Ok(None)` = tracing off (no endpoint, `OTEL_SDK_DISABLED=true`
    /// or `OTEL_TRACES_EXPORTER=none`). Everything is checked even then, so a typo never waits for the
    /// day someone sets the endpoint.
    pub fn from_vars(get: &impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let disabled = match get("OTEL_SDK_DISABLED").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(bad("OTEL_SDK_DISABLED", format!("`{other}` is not true or false"))),
        };
        let exporter_none = match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => false,
            Some("none") => true,
            Some(other) => {
                return Err(bad(
                    "OTEL_TRACES_EXPORTER",
                    format!("`{other}` is not otlp or none (the only exporter built in)"),
                ));
            }
        };
        for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            match get(var).as_deref() {
                None | Some("http/protobuf") => {}
                Some(p @ ("grpc" | "http/json")) => {
                    return Err(bad(
                        var,
                        format!("`{p}` is not built in: use http/protobuf (the collector's port 4318)"),
                    ));
                }
                Some(other) => return Err(bad(var, format!("`{other}` is not http/protobuf"))),
            }
        }
        let endpoint = match (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            // The per-signal URL is used as given; the base URL gets the signal's path (OTLP spec).
            (Some(url), _) => Some(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)),
            (None, Some(base)) => {
                Some(("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}/v1/traces", base.trim_end_matches('/'))))
            }
            (None, None) => None,
        };
        if let Some((var, url)) = &endpoint {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                if url.starts_with("https://") {
                    bad(var, "https is not built in: send to a collector over http:// (in-cluster or a local agent)")
                } else {
                    bad(var, "must start with http://, e.g. http://otel-collector:4318")
                }
            })?;
            let host = rest.split(['/', '?']).next().unwrap_or("");
            if host.is_empty() || url.parse::<poem::http::Uri>().is_err() {
                return Err(bad(var, "is not a URL with a host, e.g. http://otel-collector:4318"));
            }
        }
        let headers_var = if get("OTEL_EXPORTER_OTLP_TRACES_HEADERS").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
        } else {
            "OTEL_EXPORTER_OTLP_HEADERS"
        };
        let headers = parse_pairs(headers_var, &get(headers_var).unwrap_or_default())?;
        for (k, v) in &headers {
            if HeaderName::from_bytes(k.as_bytes()).is_err() || HeaderValue::from_str(v).is_err() {
                return Err(bad(headers_var, format!("`{k}` is not a valid HTTP header")));
            }
        }
        let timeout_var = if get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
        } else {
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        };
        let timeout = Duration::from_millis(parse_num(get, timeout_var, 10_000, 1, 60_000)?);
        let resource = parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &get("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default())?;
        // OTEL_SERVICE_NAME wins over a service.name in OTEL_RESOURCE_ATTRIBUTES (SDK spec).
        let service_name = get("OTEL_SERVICE_NAME")
            .or_else(|| resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()))
            .unwrap_or_else(|| "aside".into());
        let sampler = parse_sampler(get)?;
        let schedule_delay = Duration::from_millis(parse_num(get, "OTEL_BSP_SCHEDULE_DELAY", 5_000, 1, 600_000)?);
        let max_queue_size = parse_num(get, "OTEL_BSP_MAX_QUEUE_SIZE", 2_048, 1, 1_000_000)? as usize;
        let max_export_batch_size = parse_num(get, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, 1_000_000)? as usize;
        if max_export_batch_size > max_queue_size {
            return Err(bad("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "must not exceed OTEL_BSP_MAX_QUEUE_SIZE"));
        }
        let Some((_, endpoint)) = endpoint.filter(|_| !disabled && !exporter_none) else { return Ok(None) };
        Ok(Some(Self {
            endpoint,
            headers,
            timeout,
            service_name,
            resource,
            sampler,
            schedule_delay,
            max_queue_size,
            max_export_batch_size,
        }))
    }
}

fn parse_sampler(get: &impl Fn(&str) -> Option<String>) -> Result<SamplerConfig, ConfigError> {
    let arg = get("OTEL_TRACES_SAMPLER_ARG");
    let ratio = |default: f64| -> Result<f64, ConfigError> {
        let Some(raw) = &arg else { return Ok(default) };
        match raw.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(bad("OTEL_TRACES_SAMPLER_ARG", format!("`{raw}` is not a ratio in 0..=1"))),
        }
    };
    Ok(match get("OTEL_TRACES_SAMPLER").as_deref() {
        None => SamplerConfig::ParentBasedTraceIdRatio(ratio(DEFAULT_RATIO)?),
        Some("always_on") => SamplerConfig::AlwaysOn,
        Some("always_off") => SamplerConfig::AlwaysOff,
        // A ratio sampler named without an argument samples everything (SDK spec).
        Some("traceidratio") => SamplerConfig::TraceIdRatio(ratio(1.0)?),
        Some("parentbased_always_on") => SamplerConfig::ParentBasedAlwaysOn,
        Some("parentbased_always_off") => SamplerConfig::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => SamplerConfig::ParentBasedTraceIdRatio(ratio(1.0)?),
        Some(other) => {
            return Err(bad(
                "OTEL_TRACES_SAMPLER",
                format!(
                    "`{other}` is not always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Option<TraceConfig>, ConfigError> {
        let vars: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TraceConfig::from_vars(&|k: &str| vars.get(k).cloned())
    }

    const EP: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/");

    #[test]
    fn no_endpoint_means_off_and_the_base_url_gets_the_traces_path() {
        assert!(from(&[]).expect("valid").is_none());
        assert!(from(&[EP, ("OTEL_SDK_DISABLED", "true")]).expect("valid").is_none());
        assert!(from(&[EP, ("OTEL_TRACES_EXPORTER", "none")]).expect("valid").is_none());
        let c = from(&[EP]).expect("valid").expect("on");
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(c.service_name, "aside");
        assert_eq!(c.sampler, SamplerConfig::ParentBasedTraceIdRatio(DEFAULT_RATIO));
        let c = from(&[EP, ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:4318/custom")]).expect("valid");
        assert_eq!(c.expect("on").endpoint, "http://other:4318/custom", "the per-signal URL is used as given");
    }

    #[test]
    fn samplers_follow_the_sdk_spec() {
        let s = |name: &str, arg: Option<&str>| {
            let mut v = vec![EP, ("OTEL_TRACES_SAMPLER", name)];
            if let Some(a) = arg {
                v.push(("OTEL_TRACES_SAMPLER_ARG", a));
            }
            from(&v).map(|c| c.expect("on").sampler)
        };
        assert_eq!(s("always_on", None).expect("ok"), SamplerConfig::AlwaysOn);
        assert_eq!(s("always_off", Some("junk-is-ignored-by-non-ratio")).expect("ok"), SamplerConfig::AlwaysOff);
        assert_eq!(s("traceidratio", Some("0.25")).expect("ok"), SamplerConfig::TraceIdRatio(0.25));
        assert_eq!(s("traceidratio", None).expect("ok"), SamplerConfig::TraceIdRatio(1.0));
        assert_eq!(s("parentbased_always_on", None).expect("ok"), SamplerConfig::ParentBasedAlwaysOn);
        assert_eq!(s("parentbased_always_off", None).expect("ok"), SamplerConfig::ParentBasedAlwaysOff);
        assert_eq!(s("parentbased_traceidratio", Some("0")).expect("ok"), SamplerConfig::ParentBasedTraceIdRatio(0.0));
        assert_eq!(
            from(&[EP, ("OTEL_TRACES_SAMPLER_ARG", "0.5")]).expect("ok").expect("on").sampler,
            SamplerConfig::ParentBasedTraceIdRatio(0.5)
        );
        assert_eq!(s("traceidratio", Some("1.5")).expect_err("out of range").var, "OTEL_TRACES_SAMPLER_ARG");
        assert_eq!(s("jaeger_remote", None).expect_err("not built in").var, "OTEL_TRACES_SAMPLER");
    }

    #[test]
    fn each_bad_value_names_its_variable_even_with_tracing_off() {
        for (var, val) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "bad header=1"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=%zz"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_SDK_DISABLED", "maybe"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ] {
            let err = from(&[(var, val)]).expect_err(var);
            assert_eq!(err.var, var, "{val}");
        }
    }

    #[test]
    fn headers_and_resource_attributes_are_decoded_and_service_name_wins() {
        let c = from(&[
            EP,
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cret, x-tenant=a"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,deployment.environment.name=dev%2C1"),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(c.headers, vec![("authorization".into(), "Bearer s3cret".into()), ("x-tenant".into(), "a".into())]);
        assert_eq!(c.service_name, "from-attrs", "service.name from OTEL_RESOURCE_ATTRIBUTES");
        assert!(c.resource.contains(&("deployment.environment.name".into(), "dev,1".into())));
        assert!(!format!("{c:?}").contains("s3cret"), "headers never reach a log line");
        let c = from(&[EP, ("OTEL_SERVICE_NAME", "svc"), ("OTEL_RESOURCE_ATTRIBUTES", "service.name=x")]).expect("ok");
        assert_eq!(c.expect("on").service_name, "svc");
    }
}
