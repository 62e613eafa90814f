"""The node's coordinator: one process per node (started by the supervisor) that owns what workers share.

    schema.py            wire format: msgpack [version, type, id, kind, body], SchemaError for anything else
    messages.py          one frozen class per message kind: fields, to_body/from_body (validating), Failure
    endpoints.py         ipc:// endpoints under server.state_dir (coordinator.sock, control.sock)
    service.py           CoordinatorService: ROUTER loop, register(MessageClass, handler) -> Reply(reply, pushes),
                         broadcast-then-reply with acks, defer(), worker liveness through pidfds
    client.py            CoordinatorClient: the worker's DEALER on its io_uring (request/notify/subscribe)
    control.py           control_request(): one blocking request on control.sock (the CLI)
    registry.py          SessionRegistry, pure: sessions, reinstatement, snapshot/restore/deltas
    sessions_service.py  the registry's handlers (SessionLogin/Logout/Resync, ListSessions)
    unit_service.py      UnitAuthority: every unit's reservations, unit attentions, mode and medium, and handlers
    unit_state/          the pure state machines it runs (reservations, medium) and the SCSI status/sense
                         vocabulary they answer with; `target` imports these, and never the reverse
    lograte.py           rate-limited logging, for the coordinator and the target alike
    main.py              the process: service + domain handlers, until SIGTERM
"""
