//! Logs (text or JSON on standard error, level from `HERALD_LOG`) and, when built with the
//! `otel` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the same spans exported over
//! OTLP (HTTP/protobuf) to an OpenTelemetry collector.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"))
}

/// What must be flushed before the process exits.
pub struct Guard {
    #[cfg(feature = "otel")]
    otel: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Guard {
    /// Sends the spans still buffered (off the async runtime: the exporter blocks).
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.otel {
            let done = std::thread::spawn(move || provider.shutdown()).join();
            if let Ok(Err(e)) = done {
                eprintln!("herald: flushing traces failed: {e}");
            }
        }
    }
}

/// Colours only for a person at a terminal: not into a pipe, a file or the journal, and
/// never when `NO_COLOR` is set (https://no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

pub fn init(format: &str) -> Result<Guard, String> {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour());
    let fmt: BoxedLayer = if format == "json" {
        fmt.json().with_filter(filter()).boxed()
    } else {
        fmt.with_filter(filter()).boxed()
    };
    #[allow(unused_mut)]
    let mut layers = vec![fmt];
    #[cfg(feature = "otel")]
    let otel = match otel::provider()? {
        Some(provider) => {
            use opentelemetry::trace::TracerProvider as _;
            let tracer = provider.tracer("herald");
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(filter())
                    .boxed(),
            );
            Some(provider)
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))?;
    Ok(Guard {
        #[cfg(feature = "otel")]
        otel,
    })
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry_otlp::SpanExporter;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// A tracer provider exporting to `OTEL_EXPORTER_OTLP_ENDPOINT` (or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `None` when neither is set.
    pub fn provider() -> Result<Option<SdkTracerProvider>, String> {
        let configured = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
        if !configured {
            return Ok(None);
        }
        // reqwest is built without a default TLS provider; Herald installs ring.
        herald_server::install_crypto_provider();
        // The exporter's blocking HTTP client may not be built on the async runtime.
        let exporter = std::thread::spawn(|| SpanExporter::builder().with_http().build())
            .join()
            .map_err(|_| "building the OTLP exporter panicked".to_string())?
            .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("herald");
        }
        Ok(Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build(),
        ))
    }
}
