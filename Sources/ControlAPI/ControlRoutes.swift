import Foundation
import Hummingbird
import NIOFoundationCompat
import Hypervisor

/// The control API's routes over one machine, in Firecracker's shapes where they fit:
/// `GET /` (instance info), `PATCH /vm` (pause/resume), `PUT /snapshot/create`, `GET /metrics`,
/// `PUT /actions` (stop).
/// Every refusal is a 4xx with `{"fault_message": …}` naming the field or the state at fault; a
/// snapshot of a running machine is refused before any file is touched.
struct ControlRoutes: Sendable {
    let machine: Machine
    let info: InstanceInfo
    let extraMetrics: @Sendable () -> [MetricSample]

    func build() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: FaultBodyMiddleware())
        router.get("/") { _, _ in instanceInfo() }
        router.patch("/vm") { request, _ in try await changeState(request) }
        router.put("/snapshot/create") { request, _ in try await createSnapshot(request) }
        router.get("/metrics") { _, _ in metrics() }
        router.put("/actions") { request, _ in try await instanceAction(request) }
        // Known paths with another method: 405, not 404, so a client learns the path is right.
        let allowed: [(String, HTTPRequest.Method)] = [("/", .get), ("/vm", .patch), ("/snapshot/create", .put), ("/metrics", .get), ("/actions", .put)]
        for (path, method) in allowed {
            for other in [HTTPRequest.Method.get, .put, .patch, .post, .delete] where other != method {
                router.on(RouterPath(path), method: other) { _, _ -> Response in
                    throw ControlAPIError(.methodNotAllowed, "\(path) takes \(method.rawValue) only")
                }
            }
        }
        return router
    }

    private func instanceInfo() -> Response {
        let metrics = machine.metrics()
        return JSONBody.response(.ok, [
            "id": info.id,
            "app_name": "streamvm",
            "vmm_version": InstanceInfo.vmmVersion,
            "state": metrics.state.rawValue,
            "appliance": info.appliance,
            "appliance_version": info.applianceVersion,
            "uptime_s": Double(metrics.uptime.components.seconds) + Double(metrics.uptime.components.attoseconds) / 1e18,
            "vcpus": metrics.vcpuCount,
            "memory_mib": info.memoryMiB,
        ])
    }

    private func changeState(_ request: Request) async throws -> Response {
        let change = try ControlRequests.vmStateChange(try await body(of: request))
        let machine = machine
        try await OwnThread.run {
            switch (change, machine.state) {
            case (.paused, .paused), (.resumed, .running):
                return // already there: the request is idempotent, as Firecracker's is
            case (.paused, .running):
                try machine.pause()
            case (.resumed, .paused):
                try machine.resume()
            case (_, let state):
                throw ControlAPIError.badRequest("the machine is \(state.rawValue.lowercased()); it cannot be \(change.rawValue.lowercased())")
            }
        }
        return Response(status: .noContent)
    }

    private func instanceAction(_ request: Request) async throws -> Response {
        switch try ControlRequests.instanceAction(try await body(of: request)) {
        case .instanceStop:
            // stop() only asks: the vCPU threads end and the command's run returns as on SIGTERM.
            machine.stop(.stopRequested)
        }
        return Response(status: .noContent)
    }

    private func createSnapshot(_ request: Request) async throws -> Response {
        let target = try ControlRequests.snapshotCreate(try await body(of: request))
        let machine = machine
        // Checked here and again under the machine's lifecycle lock inside saveSnapshot.
        guard machine.state == .paused else {
            throw ControlAPIError.badRequest("the machine is \(machine.state.rawValue.lowercased()); pause it (PATCH /vm {\"state\":\"Paused\"}) before a snapshot")
        }
        try await OwnThread.run {
            do {
                try machine.saveSnapshot(statePath: target.snapshotPath, memoryPath: target.memoryFilePath)
            } catch let error as HypervisorError {
                if case .invalidState(let problem) = error { throw ControlAPIError.badRequest(problem) }
                throw ControlAPIError(.internalServerError, "snapshot failed: \(error)")
            }
        }
        return Response(status: .noContent)
    }

    private func metrics() -> Response {
        let text = MetricsText.render(machine.metrics(), instance: info, extra: extraMetrics())
        return Response(status: .ok, headers: [.contentType: MetricsText.contentType], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    private func body(of request: Request) async throws -> Data {
        do {
            return Data(buffer: try await request.body.collect(upTo: ControlRequests.maximumBodyBytes))
        } catch {
            throw ControlAPIError(.contentTooLarge, "the body is larger than \(ControlRequests.maximumBodyBytes) bytes")
        }
    }
}

/// Turns every error into the API's error body: ours as they are, the router's own (unknown path)
/// and anything unexpected with their status and a plain message.
struct FaultBodyMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as ControlAPIError {
            return error.response()
        } catch let error as HTTPError {
            let message = error.status == .notFound ? "no route \(request.method.rawValue) \(request.uri.path)" : (error.body ?? "\(error.status)")
            return ControlAPIError(error.status, message).response()
        } catch {
            return ControlAPIError(.internalServerError, "\(error)").response()
        }
    }
}

/// Runs blocking machine work (pausing waits for every vCPU to park; a snapshot writes all of guest
/// RAM) on a thread of its own, never on the event loops or the small cooperative pool.
enum OwnThread {
    static func run(_ body: @escaping @Sendable () throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.name = "control-api"
            thread.start()
        }
    }
}
