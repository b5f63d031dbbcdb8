//! A local stand-in for the Kustomer API, faithful to `shared/kustomer-api.md`, for the demo,
//! the tests and the benchmarks. It listens on loopback only and keeps everything in memory.
//!
//! It imports nothing of the importer (its unit tests aside). Inside, dependencies point one way:
//! `router` (the one route table and the gate) → the route modules (`messages`, `admin`, `bulk`,
//! `customers`, `conversations`, `seeding`) → `http` (the shared answers), `creates` → `state`
//! (with `state::bulk`, `clock`, `counters`) → `directory`, `faults`, `keys`, `validate`.
//!
//! # Keys
//! Send `Authorization: Bearer <key>`. A missing, unknown or revoked key answers 401.
//!
//! | key | roles | audit fields |
//! |---|---|---|
//! | [`ADMIN_KEY`] | `org.admin`, `org.permission.message.create`, `org.permission.message.read`, `org.permission.bulk.read`, legacy `org.user.message.write`/`read`, the four customer and conversation roles | `createdAt`, `createdBy`, `modifiedAt`, `modifiedBy` kept as sent (defaults: now / the key's user) |
//! | [`AGENT_KEY`] | `org.permission.message.create`, `org.permission.message.read`, the four customer and conversation roles | silently overwritten with now and the key's machine user |
//! | [`READONLY_KEY`] | `org.permission.message.read` | creating answers 403 |
//! | [`MESSAGES_ONLY_KEY`] | as [`ADMIN_KEY`] without the customer and conversation roles (not revoked with it) | kept as sent |
//!
//! The customer and conversation roles: `org.permission.customer.read`,
//! `org.permission.customer.create`, `org.permission.conversation.read`,
//! `org.permission.conversation.create`.
//!
//! Every key has its own machine user id and all belong to one org (24-hex ids).
//!
//! # Endpoints under `/v1`
//! - `GET /v1/auth/tokens/current`: 200
//!   `{"data":{"type":"token","id":..,"attributes":{"name":..,"roles":[..],"user":..,"org":..}}}`;
//!   with [`SandboxConfig::hide_roles`] the attributes carry no `roles`.
//! - `POST /v1/conversations/{id}/messages`: creates a message. Checks, in order: latency, auth
//!   (401), org limit (429), role `org.permission.message.create` (403), fault dice (500, 503,
//!   connection dropped before storing), conversation id (400 unless 24 lowercase hex; **an id
//!   starting with `dead` is an unknown conversation: 404** `{"errors":[{"code":"not_found",
//!   "message":"Conversation <id> not found","meta":{}}]}`; every other id exists), body
//!   (`Content-Type: application/json`, well-formed JSON, else 400), the request schema of the
//!   OpenAPI file (see `validate`; `directionType` or any unknown property is a 400), the
//!   per-customer limit (429), store, then the store-then-drop dice. Answers 201 with Kustomer's
//!   JSON:API message document: `data.type` `message`, `data.id`, `data.attributes` (what was sent,
//!   date-times normalised to UTC milliseconds, plus `createdAt`, `modifiedAt`, `updatedAt`,
//!   `sentAt` (defaults to `createdAt`) and `meta` (defaults to `{}`)), `data.relationships`
//!   `conversation`, `customer`, `createdBy`, `modifiedBy`, `org` (each `{"data":{"type","id"},
//!   "links":{"self"}}`) and `data.links.self` = `/v1/messages/<id>`. Body fields `id`,
//!   `conversation` and `customer` pass the schema but are ignored: the path decides.
//!   `externalId` is not unique (as in Kustomer): storing one again is allowed and counted as a
//!   duplicate in the stats (seeded messages excepted, see below). The dice may instead answer a
//!   stored create otherwise (see Faults).
//! - `GET /v1/messages/externalId=<url-encoded id>` and `GET /v1/messages/externalid=<id>`: 200
//!   with the latest message stored under that externalId in any conversation (same document),
//!   else 404. Needs `org.permission.message.read` (403); then the `lookup_429` dice (429 with the
//!   usual `Retry-After` rule); then [`SandboxConfig::lookup`] (`both`, `camel`, `lower`, `none`):
//!   a spelling it does not accept answers the very 404 a miss gets, as a route that does not
//!   exist would, so a client cannot tell them apart. [`SandboxConfig::not_found_as_empty`]: a
//!   miss on an accepted spelling answers 200 `{"data": []}`. [`SandboxConfig::lookup_list`]: a
//!   hit answers `{"data": [doc, ..]}` with every message stored under that externalId, in any
//!   conversation, newest first (a miss is still 404, or `{"data": []}` with
//!   `not_found_as_empty`).
//! - `POST /v1/messages/bulk`, `GET /v1/bulk/{id}`, `GET /v1/bulk/{id}/batches`: bulk jobs, see
//!   Bulk below.
//! - `GET /v1/messages/<id>` (no `externalId=` prefix): 200 with that message's document, else
//!   404 (needs `org.permission.message.read`). Bulk mode reads messages back this way to check
//!   their audit fields.
//! - Any other `/v1` path: 404.
//! - [`SandboxConfig::redirect_to`]: every `/v1` request is answered `307` with
//!   `Location: <redirect_to>` before anything else (no latency, auth, limit or storing; counted
//!   in `requests_total`, `requests_by_status` and `faults_injected.redirected`).
//!
//! Validation errors (400 from the schema) use JSON:API objects, one per problem:
//! `{"errors":[{"status":400,"code":"bad_request","title":"Bad Request","detail":"..",
//! "source":{"pointer":"/data/attributes/<field>"}}]}`. Every other error uses
//! `{"errors":[{"code":"..","message":"..","meta":{}}]}` (codes `bad_request`, `unauthorized`,
//! `forbidden`, `not_found`, `too_many_requests`, `internal_server_error`, `service_unavailable`).
//!
//! # Limits
//! Both limits use fixed windows of [`SandboxConfig::window`] counted from server start.
//! - Org: [`SandboxConfig::org_limit`] requests per window; every authenticated `/v1` request
//!   counts (creates, lookups, token reads; a 401 cannot be charged to the org). Over it: 429.
//! - Customer: [`SandboxConfig::customer_limit`] (120) created messages per window per customer,
//!   only for messages **without** `importedAt`. Each conversation belongs to its own customer,
//!   whose id is a hash of the conversation id. Over it: 429.
//! - Every `/v1` response carries `x-ratelimit-limit` (1000000 when unlimited),
//!   `x-ratelimit-remaining` and `x-ratelimit-reset` (whole seconds until the window ends,
//!   rounded up, or the window's end in Unix epoch seconds or milliseconds, rounded up: see
//!   [`SandboxConfig::reset_unit`]), unless [`SandboxConfig::rate_headers`] is off. 429s carry
//!   `Retry-After: <seconds>` when [`SandboxConfig::retry_after`] is set, or exactly
//!   [`SandboxConfig::retry_after_value`] when given (an absurd number, an HTTP date, garbage).
//! - [`SandboxConfig::live_client`]: a live integration inside the sandbox spends the org window
//!   at a rate pattern from the start (see `live`); its requests and the 429s it received are in
//!   the stats' `live_client`, not in the request counts.
//!
//! # Faults
//! [`SandboxConfig::error_429`]: a create answered 429 although the org has room (its own dice
//! stream, drawn after auth and the org limit, so it never shifts the faults below).
//! [`Faults`]: latency with uniform jitter before every `/v1` request;
//! `revoke_admin_after: Some(n)` revokes [`ADMIN_KEY`] when the (n+1)-th create request arrives.
//! Every create that passes auth, the org limit and the create role draws exactly three numbers
//! in 0..1 from the fault stream, whatever happens next:
//! 1. before storing, exclusive ranges laid out in this order: `error_500` (500), `error_503`
//!    (503; with `error_503_retry_after` it carries `Retry-After` as a 429 would, whatever
//!    `retry_after` says), `drop_before_store` (the connection closes, nothing stored), else go on;
//! 2. once stored (acted on only if the create is valid and stored), exclusive ranges in this
//!    order: `store_then_drop` (stored, the connection closes with no response bytes),
//!    `store_then_error` (stored, answered with a status of `store_then_error_statuses`: an HTML
//!    gateway page for 502, 504 and 520..=529, the usual JSON error for 408 and other 5xx),
//!    `slow_store` (held `slow_store_delay`, then stored, then 201; the store runs in its own task
//!    so it lands even if the client has hung up), `accepted_202` (stored, 202 with the usual
//!    document), `created_without_id` (stored, 201 with a document without `data.id` and
//!    `data.links`), `oversize_body` (stored, 201 with the document after a top-level
//!    `meta.padding` of 2 MiB: valid JSON whose id lies past the first MiB), else 201;
//! 3. which of `store_then_error_statuses` answers (uniform), drawn even when unused.
//!
//! Each range set must sum to at most 1. Every externalId lookup that reaches the lookup handler
//! draws one number from its own stream for `lookup_429`. Streams come from
//! `StdRng::seed_from_u64(seed)`: the same seed and the same request order give the same faults;
//! latency and lookup draws use separate streams and never shift the create faults. Each fault
//! is counted in `faults_injected` when it is acted upon (`slow_store` once the held message is
//! stored).
//!
//! # Bulk
//! [`SandboxConfig::bulk`] ([`BulkConfig`]); routes in `bulk/`, the jobs store in
//! `state/bulk/`. Shapes exactly as
//! `shared/kustomer-api.md` (section Bulk) shows them.
//! - `POST /v1/messages/bulk`: after the gate (latency, auth, org limit: one unit per request),
//!   role `org.permission.message.create` (403), `Content-Type: application/json` and
//!   well-formed JSON (400), then the array's shape, refused whole with a 400 and no job: a JSON
//!   array of 1 to [`MAX_BULK_ITEMS`] objects; `_clientRef` on every item or on none, each a
//!   string of 1 to [`MAX_CLIENT_REF_CHARS`] characters, all different. Each item is then
//!   checked like a single create's body (the OpenAPI schema, `directionType` refused) plus
//!   `conversation`, required, 24 lowercase hex; an invalid item fails alone (status 400 in its
//!   result), or with [`BulkConfig::reject_invalid`] the whole request is refused with the
//!   JSON:API 400 of a single create, each pointer prefixed by `/<index>`. Bodies up to 16 MiB.
//!   Answers 201 (200 with [`BulkConfig::answer_200`]) with the job document (below), status
//!   `queued`, `completed: false`, no batch complete.
//! - The job is split into batches of [`BulkConfig::batch_items`] items (default 25: a 100-item
//!   job has four), taken from its processing order: a random order, or array order with
//!   [`BulkConfig::in_order`]. It runs in the background: with [`BulkConfig::out_of_order`] it is
//!   first held back until a job created after it has completed (or, when no later job is left
//!   to complete, [`BulkConfig::held_back_limit`]); then `queued` for the first half of its
//!   delay (uniform in `delay ± jitter`; [`BulkConfig::slow_jobs`]: times
//!   [`BulkConfig::slow_factor`]), `running` for the second half while its batches are
//!   processed one after another, its items stored one by one, evenly spread; each batch is
//!   `complete` once its last item is; then the job is `complete`. Each item, in that order:
//!   invalid: error 400; conversation starting with `dead`: error 404; the item-error dice
//!   ([`BulkConfig::item_error`], status uniform from [`BulkConfig::item_error_statuses`], by
//!   default every one of [`BULK_ITEM_ERROR_STATUSES`]): that error, **nothing stored whatever
//!   the status** (429 = refused before processing; the 500 and 503 drawn here are refusals
//!   before storing too); else stored exactly as a single create by the same key (audit fields
//!   kept only for the admin key, defaults as for a create, the per-customer limit only without
//!   `importedAt`, else error 429, not stored), so lookups find it with the same document; then
//!   [`BulkConfig::item_stored_error`]: **stored, and reported as error 500**.
//! - `GET /v1/bulk/{id}`: 200 `{"data":{"type":"bulk","id","attributes":{"status":"queued"|
//!   "running"|"complete","completed":<status is complete>,"batches":{"complete":n,
//!   "total":m}}}}`.
//! - `GET /v1/bulk/{id}/batches`: 200 `{"data":[..]}` ([`BulkConfig::bare_batches`]: the bare
//!   array): nothing while the job is `queued`; once it runs, every batch in processing order as
//!   `{"type":"bulk_batch","id":"<24 hex>","attributes":{..}}`. A complete batch's attributes:
//!   `status` `complete`, `successCount`, `failureCount`, `objectIds` (the created items' ids,
//!   in order) and `results`, one per item in processing order: `{"_clientRef","objectId",
//!   "status":"created"}` or `{"_clientRef","status":"error","error":{"status","code","title",
//!   "detail"}}` (`_clientRef` left out when none was given). Any other batch: `{"status":
//!   "scheduled","results":[]}` for the one being processed (or stuck), `{"status":"queued",
//!   "results":[]}` for those after it.
//! - Both reads need `org.permission.bulk.read` (403; [`ADMIN_KEY`] has it, [`AGENT_KEY`]
//!   not), then draw the read dice: [`BulkConfig::read_429`] answers 429 (`Retry-After` as for
//!   the org limit, rate headers as on every answer), else [`BulkConfig::read_drop`] closes the
//!   connection unanswered; an unknown job is 404.
//! - Faults of the results: [`BulkConfig::never_complete`]: one batch (uniform) stays
//!   `scheduled` forever, its items never processed, while the others complete; the job stays
//!   `running` (and no held-back job waits for it). [`BulkConfig::unknown_ref`]: the job's first
//!   batch to complete also lists `{"_clientRef":"never-sent-<n>","objectId":<an id no message
//!   has>,"status":"created"}`. [`BulkConfig::duplicate_ref`]: one item (uniform) is listed
//!   twice in its batch under its `_clientRef`: its own result, then the opposite (created →
//!   error 400; error → created with an id no message has). [`BulkConfig::drop_after_create`]:
//!   the job is created and runs, but the POST's connection closes without an answer.
//! - Dice: every job draws, when created, in this order: drop the answer, hold back, its delay,
//!   a shuffle of its items (drawn even when in order), per item three numbers (error or not,
//!   which status, stored then 500 or not), then slow or not, never complete or not and which
//!   batch, unknown ref or not, duplicate ref or not and which item, whatever the switches. The
//!   stream is `StdRng::seed_from_u64(seed ^ 0x6275_6c6b_6a6f_6273)`; every read past the role
//!   check draws two numbers (429, drop) from `StdRng::seed_from_u64(seed ^
//!   0x6275_6c6b_7265_6164)`: apart from every other stream, so bulk traffic shifts no other
//!   dice and reads shift no job's dice.
//! - Stats ([`BulkStats`], at the top level of `/_sandbox/stats`): `bulk_jobs` (created, a
//!   dropped answer included), `bulk_items`, `bulk_batches`, `bulk_batches_complete`,
//!   `bulk_polls` and `bulk_batch_reads` (requests past the gate), `bulk_items_created` (stored,
//!   stored-then-500 included), `bulk_items_failed` (results in error), `bulk_jobs_complete`,
//!   `bulk_jobs_overtaking` (completed while a job created earlier had not); in
//!   `faults_injected` ([`BulkFaultCounts`], each when acted upon): `bulk_item_error`,
//!   `bulk_item_stored_error`, `bulk_drop_after_create` (also counted in
//!   `dropped_connections`), `bulk_out_of_order` (jobs held back), `bulk_slow_jobs`,
//!   `bulk_never_complete` (batches whose turn came), `bulk_unknown_ref`, `bulk_duplicate_ref`,
//!   `bulk_read_429`, `bulk_read_drop` (also in `dropped_connections`).
//! - `POST /_sandbox/bulk/hold` / `POST /_sandbox/bulk/release` (204): in between, jobs still go
//!   `running` but store no item, so a test can hold a job mid-way instead of timing it.
//! - `POST /v1/customers/bulk` and `POST /v1/conversations/bulk`: jobs of the same machinery
//!   (the same array rules, job and batch documents, reads, delays and switches), the role
//!   `org.permission.customer.create` / `org.permission.conversation.create` (403); each item is
//!   checked against its kind's schema (400 in its result) and stored like a single create of
//!   its kind (a conversation naming no known customer fails with 404). Counted in the
//!   top-level bulk stats and in the kind's `bulk` ([`KindCounts`]). The item dice
//!   (`item_error`, `item_stored_error`) act only on jobs whose kind is in
//!   [`SandboxConfig::fault_scope`] (messages included); they are drawn all the same.
//!
//! # Customers and conversations (issue 16)
//! Code in `customers.rs`, `conversations.rs`, `creates.rs` (the create path every kind shares),
//! `directory.rs` (storage, counters), `seeding.rs` and `keys.rs` (keys and roles). Bodies are
//! checked against the OpenAPI request schemas (`create_customer_schema.json`,
//! `create_conversation_schema.json`, adapted as `validate` says); schema errors are the
//! JSON:API 400 of messages. Ids are 24-hex.
//! - `POST /v1/customers` (role `org.permission.customer.create`): no field required. Order as
//!   for messages: role (403), fault dice, `Content-Type`/JSON (400), schema (400), store, the
//!   once-stored dice. 201 `{"data":{"type":"customer","id","attributes":{..what was sent
//!   (date-times normalised), "displayName", "emails":[{"email","type","verified":false,
//!   "id":null}], "phones", "externalIds":[{"externalId","verified":true,"id":null}], empty
//!   collections, "createdAt" (as sent, else now), "updatedAt", "modifiedAt", "importedAt",
//!   "conversationCounts", "verified", "rev"},"relationships":{"org","messages","createdBy",
//!   "modifiedBy"},"links":{"self":"/v1/customers/<id>"}}}`. `externalId` is not unique.
//! - `GET /v1/customers/externalId=<id>`, `GET /v1/customers/email=<email>` (url-decoded;
//!   matches any of a customer's `emails` case-insensitively), role
//!   `org.permission.customer.read`: 200 with the latest such customer's document, else 404
//!   (`not_found`), or 200 `{"data": []}` with [`SandboxConfig::not_found_as_empty`]; with
//!   [`SandboxConfig::lookup_list`] a hit answers `{"data": [..]}`, every match newest first.
//!   Before that, the lookup faults: 503 while `POST /_sandbox/lookups/fail` holds, the
//!   `lookup_429` dice (same stream as message lookups). `GET /v1/customers/<id>`: by id, no
//!   lookup faults.
//! - `POST /v1/conversations` (role `org.permission.conversation.create`): as a customer
//!   create; `customer` is required by the schema (400), and must name a customer created or
//!   seeded here, else 404 `Customer <id> not found`. 201 with the spec's document:
//!   `data.attributes` (what was sent but `id`/`customer`, defaults `name` "", `status` open,
//!   `direction` in, `createdAt` now, counts 0, empty collections, `rev` 1),
//!   `data.relationships.customer.data` `{"type":"customer","id"}`, `org`, `messages`,
//!   `createdBy`, `modifiedBy`, `data.links.self`.
//! - `GET /v1/conversations/externalId=<id>` (role `org.permission.conversation.read`): as the
//!   customer lookups (latest, 404 / empty data, lookup faults). `GET /v1/conversations/<id>`:
//!   by id.
//! - A message stored (single, bulk or seeded) into a conversation created or seeded here joins
//!   its customer (`relationships.customer`, and the per-customer limit). Every other
//!   conversation id behaves as before: it exists unless it starts with `dead`.
//! - `GET /v1/conversations/{id}/messages?page=N&pageSize=M` (role
//!   `org.permission.message.read`, as the spec says): 400 unless the id is 24 lowercase hex or
//!   `page`/`pageSize` are not whole numbers of at least 1; 404 for a `dead..` id; then the
//!   lookup faults; then 200 `{"meta":{"pageSize","page"},"data":[message documents in storing
//!   order],"links":{"self","first","prev","next"}}` (`prev`/`next` null at the ends; links
//!   `/v1/conversations/<id>/messages?page=N&pageSize=M`). `page` defaults to 1, `pageSize` to
//!   and at most [`MAX_PAGE_SIZE`] (larger asks get 100, and `meta.pageSize` says so).
//! - Faults: [`SandboxConfig::fault_scope`] ([`FaultScope`], default every kind) says which
//!   creates (messages, customers, conversations) the create dice and `error_429` apply to. A
//!   kind in scope draws its three numbers from the one fault stream exactly as a message create
//!   does, with the same outcomes and answers (500, 503, drop before store, store then drop,
//!   store then error, slow store, 202, without id, oversize); a kind out of scope draws nothing,
//!   so a test that creates only messages keeps its dice whatever the scope.
//!   `revoke_admin_after` counts message creates only. Hold/release, latency, auth, the org
//!   limit and the rate headers come from the one gate.
//! - [`SandboxConfig::lookup_other_first`]: a message lookup by externalId answers messages
//!   seeded by another integration first (so, when an import collides with a seeded message,
//!   the other conversation's message; with `lookup_list`, seeded ones first).
//! - Stats: `customers` and `conversations` ([`KindCounts`]): `creates` (requests received),
//!   `stored`, `seeded`, `duplicate_external_ids`, `lookups` (`external_id` and `email`
//!   `{hit, miss}`, `lookup_429`, `lookup_503`), `message_list_reads` (conversations) and
//!   `bulk` (`jobs`, `items`, `stored`, `item_error`, `item_stored_error`: its bulk jobs),
//!   `faults` ([`CreateFaultCounts`]: `error_500`, `error_503`, `drop_before_store`,
//!   `store_then_drop`, `store_then_error`, `slow_store`, `accepted_202`, `created_without_id`,
//!   `oversize_body`, `injected_429`), each also counted in the top-level `faults_injected`,
//!   `injected_429` and `dropped_connections`; `lookups.other_first` counts lookups whose
//!   leading message `lookup_other_first` changed.
//!
//! # Control endpoints (no auth, not rate limited, not counted in the stats)
//! - `GET /_sandbox/stats`: [`SandboxStats`] as JSON.
//! - `GET /_sandbox/messages`: [`MessagesDump`] as JSON, `{"conversations":{"<id>":[{id,
//!   externalId, sentAt, createdAt, createdBy, modifiedAt, modifiedBy, importedAt, direction,
//!   preview}, ..]}}`, each list in the order stored.
//! - `POST /_sandbox/revoke`: revokes [`ADMIN_KEY`] now (204).
//! - `POST /_sandbox/restore`: un-revokes it, disarms `revoke_admin_after` and lifts
//!   `/_sandbox/forbid` (204).
//! - `POST /_sandbox/seed` with `[{"conversationId": "<24 hex>", "externalId": ".."}, ..]`:
//!   stores those messages as if another integration had created them (app `other-integration`,
//!   now as every time, no limits, no faults); 201 `{"data":[{id, conversationId, externalId}]}`,
//!   or 400 storing nothing if any item is malformed or names a `dead..` conversation. Lookups
//!   see them like any message; `/_sandbox/messages` marks them `"seeded": true`; they count in
//!   `seeded`, not in `messages_stored`, and never as duplicates (an imported message whose
//!   externalId only a seeded one carries is no duplicate). A JSON object instead seeds
//!   customers and conversations too, every item checked before any is stored (400 storing
//!   nothing): `{"customers":[{"externalId"?, "name"?, "emails"?: ["Any@Case.com"]}],
//!   "conversations":[{"externalId"?, "name"?, "customer": "<id>" | "customerExternalId":
//!   ".."}], "messages":[{"conversationId": "<id>" | "conversationExternalId": "..",
//!   "externalId": ".."}]}` (each list optional; seeded in that order, so a conversation may
//!   name a customer of the same request). 201 `{"data":{"customers":[{id, externalId}],
//!   "conversations":[{id, externalId, customer}],"messages":[{id, conversationId,
//!   externalId}]}}`. Seeded ones count in `seeded` of their kind, never as created.
//! - `GET /_sandbox/customers`, `GET /_sandbox/conversations`: [`RecordsDump`], `{"records":
//!   [{id, externalId, name, emails, customer, importedAt, createdAt, seeded}, ..] (storing
//!   order), "createdByExternalId": {"<externalId>": n}}` (creates only, seeded excepted: 1
//!   everywhere means exactly once).
//! - `POST /_sandbox/hold`: from now on every `/v1` request waits (in flight, before latency and
//!   auth) until `POST /_sandbox/release` (both 204). Tests use it to keep requests in flight
//!   for as long as they need, instead of guessing with latency; stats show `held` (waiting now)
//!   and `in_flight`. `POST /_sandbox/hold?after=N`: the next N `/v1` requests pass, then the
//!   hold engages by itself (a run stopped at a point of the test's choosing, never after it
//!   ended); `release` also disarms it.
//! - `POST /_sandbox/lookups/fail`: from now on every lookup by externalId answers 503 (counted
//!   in `faults_injected.lookup_503`) while creates still work, until `POST
//!   /_sandbox/lookups/heal` (both 204): a read path that is down, so an unknown outcome stays
//!   unknown until it heals. `?status=408`: they answer 408 instead (`lookup_408`).
//! - `POST /_sandbox/lookups/miss?data=null|object|list` (204): from now on a lookup miss on an
//!   accepted spelling answers 200 `{"data": null}`, `{"data": {}}` or `{"data": []}`; `heal`
//!   restores the configured answer.
//! - `POST /_sandbox/forbid` (204): from now on every create answers 403 (`forbidden`, as if the
//!   key lost `org.permission.message.create`; counted in `faults_injected.forbidden`) until
//!   `POST /_sandbox/restore`.
//! - `/_sandbox/redirected`, any method: counts a hit in `redirect_hits` (204). Point
//!   `redirect_to` at it (`/_sandbox/redirected`) to prove a client never follows a redirect.
//!
//! [`SandboxStats`] also counts `creates` (create requests received, answered or not, before
//! auth), `creates_by_conversation` (the same by path conversation id) and `lookups`: per
//! spelling (`camel` = `externalId=`, `lower` = `externalid=`) how many were a `hit`, a `miss`
//! or answered `no_route`, plus `lookup_429`; `max_requests_in_a_window` (the most requests the
//! org window counted in one window) and `lookup_after_unknown_outcome_min_ms` (the shortest
//! wait between a stored create answered with no usable answer and the first lookup of its
//! externalId, on the sandbox's clock: how long the client let it settle).

mod admin;
mod bulk;
mod conversations;
mod creates;
mod customers;
mod directory;
mod faults;
mod http;
mod keys;
mod live;
mod messages;
mod router;
mod seeding;
mod server;
mod state;
mod stats;
mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use bulk::{
    BulkConfig, BulkFaultCounts, BulkStats, BULK_ITEM_ERROR_STATUSES, DEFAULT_BULK_BATCH_ITEMS,
    DEFAULT_BULK_DELAY, DEFAULT_BULK_JITTER, DEFAULT_BULK_SLOW_FACTOR, MAX_BULK_DELAY,
    MAX_BULK_ITEMS, MAX_BULK_SLOW_FACTOR, MAX_CLIENT_REF_CHARS,
};
use state::Shared;

pub use conversations::MAX_PAGE_SIZE;
pub use creates::FaultScope;
pub use directory::{
    CreateFaultCounts, HitMiss, KindCounts, KindLookupCounts, RecordsDump, SandboxRecord,
};

pub use live::{LiveClientStats, LivePattern};
pub use stats::{
    FaultCounts, LookupCounts, MessagesDump, SandboxMessage, SandboxStats, SpellingCounts,
};

/// Bearer key with `org.admin`: audit fields are kept as sent.
pub const ADMIN_KEY: &str = "sandbox-admin-key";
/// Bearer key without `org.admin`: audit fields are silently overwritten, as Kustomer documents.
pub const AGENT_KEY: &str = "sandbox-agent-key";
/// Bearer key that may read messages but not create them (creating answers 403).
pub const READONLY_KEY: &str = "sandbox-readonly-key";
/// Bearer key with `org.admin` and the message roles but none of the customer and conversation
/// roles: the importer's preflight must refuse a file that needs them.
pub const MESSAGES_ONLY_KEY: &str = "sandbox-messages-only-key";

/// Kustomer's documented per-customer limit of created messages per minute.
pub const DEFAULT_CUSTOMER_LIMIT: u32 = 120;
/// Kustomer's rate-limit window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Everything the sandbox can be told at start.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Must be a loopback address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Org-wide limit in requests per window; None means unlimited.
    pub org_limit: Option<u32>,
    /// Created messages without `importedAt` allowed per customer per window.
    pub customer_limit: u32,
    /// Length of the rate-limit windows (Kustomer's is 60 s; tests use shorter).
    pub window: Duration,
    /// Send `Retry-After` with 429 answers.
    pub retry_after: bool,
    /// How `x-ratelimit-reset` is written.
    pub reset_unit: ResetUnit,
    /// Sent verbatim as `Retry-After` on 429s instead of the seconds to the reset.
    pub retry_after_value: Option<String>,
    /// Send the `x-ratelimit-*` headers (off: an API that does not report its budget).
    pub rate_headers: bool,
    /// A live integration spending the org window beside the import.
    pub live_client: Option<LivePattern>,
    /// Probability (0..=1) that a create is answered 429 although the org has room (a gateway's
    /// own limiter, say), with the rate headers and `Retry-After` as configured: drives the
    /// importer's 429 handling whatever its pacing. Dice from their own seeded stream.
    pub error_429: f64,
    /// Which spelling of the externalId lookup path is accepted.
    pub lookup: LookupSpelling,
    pub faults: Faults,
    pub seed: u64,
    /// Answer `GET /v1/auth/tokens/current` without roles (as if they could not be read).
    pub hide_roles: bool,
    // Lookup shapes and redirects of issue 7 (the dice-driven faults are in `Faults`).
    /// A lookup miss answers 200 `{"data": []}` instead of 404 (on an accepted spelling).
    pub not_found_as_empty: bool,
    /// A lookup answers `{"data": [doc, ..]}`: every message stored under the externalId, in any
    /// conversation, newest first.
    pub lookup_list: bool,
    /// Every `/v1` request is answered 307 with this `Location`, nothing processed. An absolute
    /// `http(s)` URL, or a path starting with `/` (the sandbox itself).
    pub redirect_to: Option<String>,
    /// Message of 404 answers for unknown conversations, instead of the usual one.
    pub error_body_text: Option<String>,
    /// Bulk jobs (issues 9 and 13): processing time, batches, order, item errors, faults of
    /// the results and of their reads.
    pub bulk: BulkConfig,
    /// Which kinds of create the fault dice apply to (issue 16; default every kind).
    pub fault_scope: FaultScope,
    /// A message lookup by externalId answers the messages seeded by another integration first
    /// (single answer: the latest seeded one; list: seeded ones first, each group newest first).
    pub lookup_other_first: bool,
}

impl SandboxConfig {
    /// No faults, no org limit, 120 per customer, 60 s windows, `Retry-After` sent, reset in
    /// seconds from now, both lookup spellings, seed 0, roles shown.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            org_limit: None,
            customer_limit: DEFAULT_CUSTOMER_LIMIT,
            window: DEFAULT_WINDOW,
            retry_after: true,
            reset_unit: ResetUnit::Seconds,
            retry_after_value: None,
            rate_headers: true,
            live_client: None,
            error_429: 0.0,
            lookup: LookupSpelling::Both,
            faults: Faults::default(),
            seed: 0,
            hide_roles: false,
            not_found_as_empty: false,
            lookup_list: false,
            redirect_to: None,
            error_body_text: None,
            bulk: BulkConfig::default(),
            fault_scope: FaultScope::default(),
            lookup_other_first: false,
        }
    }
}

/// How `x-ratelimit-reset` is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResetUnit {
    /// Whole seconds until the window ends, rounded up.
    #[default]
    Seconds,
    /// The window's end in Unix epoch seconds.
    EpochSeconds,
    /// The window's end in Unix epoch milliseconds.
    EpochMillis,
}

/// Spellings of `GET /v1/messages/externalId=<id>` the sandbox accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LookupSpelling {
    /// `externalId=` and `externalid=`.
    #[default]
    Both,
    /// Only `externalId=`.
    CamelOnly,
    /// Only `externalid=` (as the OpenAPI file spells it).
    LowerOnly,
    /// Neither: every spelling answers 404, as if the route did not exist.
    NoRoute,
}

/// Injected failures, each a probability in 0..=1 unless said otherwise.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Added latency per request, and its uniform jitter (+/-).
    pub latency: Duration,
    pub jitter: Duration,
    pub error_500: f64,
    pub error_503: f64,
    /// `error_503` answers carry `Retry-After` as a 429 would (seconds to the window's reset, or
    /// `retry_after_value`): a service saying it is overloaded.
    pub error_503_retry_after: bool,
    /// Close the connection without answering and without storing.
    pub drop_before_store: f64,
    /// Store the message, then close the connection without answering.
    pub store_then_drop: f64,
    /// After this many create requests, the admin key is revoked (answers 401).
    pub revoke_admin_after: Option<u64>,
    // Outcomes after storing (issue 7): exclusive outcomes of one draw with `store_then_drop`.
    /// Store, then answer one of `store_then_error_statuses` (uniform draw).
    pub store_then_error: f64,
    /// 408 or 500..=599 each; not empty.
    pub store_then_error_statuses: Vec<u16>,
    /// Hold the create `slow_store_delay`, then store (even if the client has gone), then 201.
    pub slow_store: f64,
    pub slow_store_delay: Duration,
    /// Store, then answer 202 with the usual document.
    pub accepted_202: f64,
    /// Store, then answer 201 with a document that names no message id.
    pub created_without_id: f64,
    /// Store, then answer 201 with the usual document padded to about 2 MiB.
    pub oversize_body: f64,
    /// Answer an externalId lookup 429 (Retry-After as for the org limit).
    pub lookup_429: f64,
}

/// `Faults::store_then_error_statuses` unless told otherwise: what gateways answer most.
pub const DEFAULT_STORE_THEN_ERROR_STATUSES: [u16; 3] = [500, 502, 504];

/// `Faults::slow_store_delay` unless told otherwise.
pub const DEFAULT_SLOW_STORE_DELAY: Duration = Duration::from_millis(2_000);

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            error_500: 0.0,
            error_503: 0.0,
            error_503_retry_after: false,
            drop_before_store: 0.0,
            store_then_drop: 0.0,
            revoke_admin_after: None,
            store_then_error: 0.0,
            store_then_error_statuses: DEFAULT_STORE_THEN_ERROR_STATUSES.to_vec(),
            slow_store: 0.0,
            slow_store_delay: DEFAULT_SLOW_STORE_DELAY,
            accepted_202: 0.0,
            created_without_id: 0.0,
            oversize_body: 0.0,
            lookup_429: 0.0,
        }
    }
}

/// One item of the JSON array `POST /_sandbox/seed` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedMessage {
    /// 24 lowercase hex.
    pub conversation_id: String,
    pub external_id: String,
}

/// A running sandbox. Dropping it does not stop the server; call [`RunningSandbox::shutdown`].
pub struct RunningSandbox {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    stopped: CancellationToken,
}

impl RunningSandbox {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The same numbers as `GET /_sandbox/stats`.
    pub fn stats(&self) -> SandboxStats {
        self.shared.stats()
    }

    /// The same listing as `GET /_sandbox/messages`.
    pub fn messages(&self) -> MessagesDump {
        self.shared.messages()
    }

    /// The same listing as `GET /_sandbox/customers`.
    pub fn customers(&self) -> RecordsDump {
        self.shared.world().directory.customers_dump()
    }

    /// The same listing as `GET /_sandbox/conversations`.
    pub fn conversations(&self) -> RecordsDump {
        self.shared.world().directory.conversations_dump()
    }

    /// Revokes (`true`) or restores (`false`) [`ADMIN_KEY`], like the control endpoints.
    pub fn set_admin_revoked(&self, revoked: bool) {
        self.shared.set_admin_revoked(revoked);
    }

    /// Holds (`true`) every `/v1` request at the gate until released (`false`), like
    /// `POST /_sandbox/hold` and `POST /_sandbox/release`.
    pub fn set_hold(&self, hold: bool) {
        self.shared.set_hold(hold);
    }

    /// Asks the server to stop without waiting: no new connections, open ones finish their
    /// current request (at most 5 s) and close.
    pub fn trigger_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Resolves once the server has stopped (after a shutdown was triggered).
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }

    /// Stops gracefully and waits until every connection is closed.
    pub async fn shutdown(self) {
        self.trigger_shutdown();
        self.stopped().await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox listens on loopback only; {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sandbox configuration: {0}")]
    InvalidConfig(String),
}

/// Binds and starts serving in the background on the current tokio runtime.
pub async fn start(config: SandboxConfig) -> Result<RunningSandbox, SandboxError> {
    if !config.listen.ip().is_loopback() {
        return Err(SandboxError::NotLoopback(config.listen));
    }
    if config.window.is_zero() {
        return Err(SandboxError::InvalidConfig(
            "the rate-limit window must be longer than zero".into(),
        ));
    }
    config.faults.check()?;
    if !(0.0..=1.0).contains(&config.error_429) {
        return Err(SandboxError::InvalidConfig(format!(
            "error_429 must be within 0..=1, got {}",
            config.error_429
        )));
    }
    config.bulk.check()?;
    if let Some(target) = &config.redirect_to {
        router::check_redirect_target(target)?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| SandboxError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
        addr: config.listen,
        source,
    })?;
    let live_client = config.live_client.clone();
    let shared = Arc::new(Shared::new(config));
    let shutdown = CancellationToken::new();
    let stopped = CancellationToken::new();
    if let Some(pattern) = live_client {
        tokio::spawn(live::run(Arc::clone(&shared), pattern, shutdown.clone()));
    }
    tokio::spawn(server::serve(
        listener,
        router::router(Arc::clone(&shared)),
        shutdown.clone(),
        stopped.clone(),
    ));
    Ok(RunningSandbox {
        addr,
        shared,
        shutdown,
        stopped,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod directory_tests;
