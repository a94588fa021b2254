import CHTTPParser
import ServerCore
import UVLoop

/// Where the stats routes get their figures: for the endpoint, the server (`Server`); for the
/// socket-free handler in tests and the fuzzer, any stand-in. Called on the handler's thread,
/// once per request that needs it.
public protocol StatsSource: AnyObject {
    /// The body of `/metrics`: Prometheus text exposition.
    func prometheusText() -> String
    /// The body of `/stats`: one JSON document.
    func jsonDocument() -> String
    /// `/readyz` answers 503 while this is true, 200 otherwise. For the server: true from
    /// `drain()` or `stop()` on (its `ShutdownPhase` past `.serving`), not only while draining.
    var isDraining: Bool { get }
}

/// The endpoint's source: a snapshot of the server per request (relaxed atomic loads and the
/// pools' statistics), rendered by `MetricsRenderer`.
final class ServerStatsSource: StatsSource {
    let server: Server

    init(server: Server) { self.server = server }

    func prometheusText() -> String {
        MetricsRenderer.prometheus(server.statistics(), process: .current())
    }

    func jsonDocument() -> String {
        MetricsRenderer.json(server.statistics(), process: .current(), monotonicNowNanoseconds: EventLoop.hrtime())
    }

    /// Draining or stopping: not ready either way.
    var isDraining: Bool { server.statistics().shutdownPhase != .serving }
}

/// The routes: a request in, its response out.
enum StatsRoutes {
    static func respond(to request: HTTPRequest, source: any StatsSource) -> HTTPResponse {
        guard request.method == HTTP_GET.rawValue || request.method == HTTP_HEAD.rawValue else {
            return HTTPResponse(status: 405, body: "only GET and HEAD\n", extraHeaders: [("Allow", "GET, HEAD")])
        }
        switch request.path {
        case "/metrics":
            return HTTPResponse(status: 200, contentType: MetricsRenderer.contentType, body: source.prometheusText())
        case "/stats":
            return HTTPResponse(status: 200, contentType: "application/json", body: source.jsonDocument())
        case "/healthz":
            return HTTPResponse(status: 200, body: "ok\n")
        case "/readyz":
            return source.isDraining
                ? HTTPResponse(status: 503, body: "draining\n")
                : HTTPResponse(status: 200, body: "ready\n")
        case "/":
            return HTTPResponse(status: 200, contentType: "text/html; charset=utf-8", body: Dashboard.html)
        default:
            return HTTPResponse(status: 404, body: "not found; try /metrics, /stats, /healthz, /readyz or /\n")
        }
    }
}
