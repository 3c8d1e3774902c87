//! One trace spans a gateway request and the service calls it makes: a test OTLP receiver
//! collects what the (single, in-process) constellation exports.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::Constellation;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, String, i32)>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().expect("lock");
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((hex(&s.trace_id), s.name, s.kind));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn one_trace_spans_the_gateway_request_and_the_service_calls() {
    let receiver = Receiver::default();
    let (listener, addr) = kit::testing::listener().await;
    let server = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let guard = kit::telemetry::init(
        "e2e",
        &kit::config::TelemetryConfig { otlp_endpoint: Some(format!("http://{addr}")), log: "warn".into() },
    )
    .expect("telemetry");

    let c = Constellation::start(true).await;
    // /readyz answers from a one-second cache; let the start-up probe's answer expire.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let (status, _, _) = c.gateway_get("/readyz", &[("traceparent", &traceparent)]).await.expect("readyz");
    assert_eq!(status, 200);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        guard.flush();
        let spans: Vec<(String, String, i32)> =
            receiver.0.lock().expect("lock").iter().filter(|s| s.0 == trace_id).cloned().collect();
        let gateway_span = spans.iter().any(|s| s.1 == "GET /readyz" && s.2 == 2);
        // The four upstream health checks, seen by the services' server spans (kind 2) and by the
        // gateway's client spans (kind 3), all under the caller's trace id.
        let server_checks = spans.iter().filter(|s| s.1 == "grpc.health.v1.Health/Check" && s.2 == 2).count();
        let client_checks = spans.iter().filter(|s| s.1 == "grpc.health.v1.Health/Check" && s.2 == 3).count();
        if gateway_span && server_checks >= 4 && client_checks >= 4 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "spans of trace {trace_id}: {spans:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Without an incoming traceparent, the gateway starts a trace that the services continue.
    receiver.0.lock().expect("lock").clear();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.gateway_get("/readyz", &[]).await.expect("readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        guard.flush();
        let spans = receiver.0.lock().expect("lock").clone();
        if let Some((root, _, _)) = spans.iter().find(|s| s.1 == "GET /readyz") {
            let joined =
                spans.iter().filter(|s| &s.0 == root && s.1 == "grpc.health.v1.Health/Check" && s.2 == 2).count();
            if joined >= 4 {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no joined trace: {spans:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.stop().await;
}
