//! The Flight service: each call is timed ([`crate::metrics`]), has a panic turned into
//! INTERNAL ([`crate::runtime`]) and delegates to its handler (queries: [`crate::query`],
//! puts: [`crate::put`], actions: [`crate::actions`], Flight SQL: [`crate::sql`]). Also who
//! the caller is: the handshake, the caller's role and its SQL session.
use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::stream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{require, Role};
use crate::metrics::{timed, timed_unary};
use crate::runtime::{caught, Stream};
use crate::session::{Session, SESSION_HEADER};
use crate::OmenFlight;

#[tonic::async_trait]
impl FlightService for OmenFlight {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoExchangeStream = Stream<FlightData>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.streamed("handshake", self.handshake_inner(request))
            .await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.streamed("list_flights", self.list_flights_inner(request))
            .await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.unary("get_flight_info", async {
            Ok(Response::new(
                self.describe(&request, request.get_ref()).await?,
            ))
        })
        .await
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "poll_flight_info: queries complete synchronously; use get_flight_info",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.unary("get_schema", async {
            let info = self.describe(&request, request.get_ref()).await?;
            let schema = info
                .try_decode_schema()
                .map_err(|e| Status::internal(e.to_string()))?;
            let result: SchemaResult = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
                .try_into()
                .map_err(|e: datafusion::arrow::error::ArrowError| {
                    Status::internal(e.to_string())
                })?;
            Ok(Response::new(result))
        })
        .await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.streamed("do_get", self.do_get_inner(request)).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.streamed("do_put", self.do_put_inner(request)).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.streamed("do_exchange", self.do_exchange_inner(request))
            .await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.streamed("do_action", self.do_action_inner(request))
            .await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.role(request.metadata(), Role::Read, "listing actions")?;
        Ok(Response::new(self.list_actions_inner()))
    }
}

/// Who the caller is.
impl OmenFlight {
    /// Runs the handler of `call`, which answers with a stream: timed (to the stream's end)
    /// and with a panic caught as an INTERNAL status.
    async fn streamed<T: Send + 'static>(
        &self,
        call: &'static str,
        answer: impl std::future::Future<Output = Result<Response<Stream<T>>, Status>>,
    ) -> Result<Response<Stream<T>>, Status> {
        let timer = self.metrics.start(call);
        // The knn() searches of the plans the handler starts add their waits to the query's.
        let waits = Arc::new(omendb_datafusion::QueryWaits::default());
        let answer = waits.clone().scope(caught(call, answer)).await;
        timed(timer, answer, waits)
    }

    /// Runs the handler of `call`, which answers once: timed, a panic caught.
    async fn unary<T>(
        &self,
        call: &'static str,
        answer: impl std::future::Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        let timer = self.metrics.start(call);
        timed_unary(timer, caught(call, answer).await)
    }

    /// The caller's role: checked against the token file when there is one, `admin` otherwise.
    pub(crate) fn role(
        &self,
        metadata: &MetadataMap,
        need: Role,
        what: &str,
    ) -> Result<Role, Status> {
        let role = match &self.config.tokens {
            None => Role::Admin,
            Some(tokens) => tokens.caller(metadata)?,
        };
        require(role, need, what)?;
        Ok(role)
    }

    /// The caller's SQL session.
    pub(crate) fn session<T>(&self, request: &Request<T>) -> Result<Arc<Session>, Status> {
        self.session_of(request.metadata(), request.remote_addr())
    }

    /// The SQL session of the caller whose request has `metadata` and came from `peer`.
    pub(crate) fn session_of(
        &self,
        metadata: &MetadataMap,
        peer: Option<SocketAddr>,
    ) -> Result<Arc<Session>, Status> {
        let asked = metadata.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
        Ok(self.sessions.get(asked, peer)?)
    }

    /// The handshake: answers the caller's token, also as the `authorization` header.
    async fn handshake_inner(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Stream<HandshakeResponse>>, Status> {
        let Some(tokens) = &self.config.tokens else {
            return Err(Status::unimplemented(
                "this server runs without authentication (no --token-file); no handshake is needed",
            ));
        };
        let token = tokens.handshake(request.metadata())?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Stream<HandshakeResponse>> =
            Response::new(Box::pin(stream::iter([Ok(reply)])));
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::internal("token is not a valid header value"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }
}
