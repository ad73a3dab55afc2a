//! The one place where the generated `Guest` trait is implemented: it converts between the
//! WIT types and this crate's types and forwards to the context's [`Context`] impl.

use std::marker::PhantomData;
use std::sync::OnceLock;

use crate::bindings::carshare::context::types as wit;
use crate::events::Handlers;
use crate::{Context, Event, Request};

/// The context's handler table, built on first use. A component holds exactly one context, so
/// one table per instance.
static HANDLERS: OnceLock<Handlers> = OnceLock::new();

fn handlers<C: Context>() -> &'static Handlers {
    HANDLERS.get_or_init(C::handlers)
}

/// Implements the generated export trait for any [`Context`]; used by [`crate::context!`].
pub struct Adapter<C>(PhantomData<C>);

impl<C: Context> crate::bindings::Guest for Adapter<C> {
    fn manifest() -> wit::Manifest {
        let m = C::manifest();
        wit::Manifest {
            name: m.name.to_string(),
            version: m.version.to_string(),
            routes: m.routes.iter().map(|s| s.to_string()).collect(),
            subscriptions: handlers::<C>()
                .subscriptions()
                .map(|(event_type, publisher, placed_by)| wit::Subscription {
                    event_type: event_type.to_string(),
                    publisher: Some(publisher.to_string()),
                    placed_by: placed_by.map(str::to_string),
                })
                .collect(),
            publishes: m
                .publishes
                .into_iter()
                .map(|d| wit::EventDeclaration {
                    event_type: d.event_type.to_string(),
                    summary: d.summary.to_string(),
                    key: d.key.to_string(),
                    schema: d.schema.to_string(),
                })
                .collect(),
            placement: match m.placement {
                crate::Placement::Partitioned => wit::Placement::Partitioned,
                crate::Placement::Single => wit::Placement::Single,
            },
            operations: m.operations.into_iter().map(operation).collect(),
            schemas: m
                .schemas
                .into_iter()
                .map(|(name, schema)| (name.to_string(), schema.to_string()))
                .collect(),
        }
    }

    fn handle_request(request: wit::Request) -> Result<wit::Response, wit::ContextError> {
        crate::rest::begin_call();
        C::handle_request(Request::from(request))
            .map(Into::into)
            .map_err(Into::into)
    }

    fn handle_event(event: wit::Event) -> Result<(), wit::ContextError> {
        crate::rest::begin_call();
        handlers::<C>().dispatch(&Event::from(event)).map_err(Into::into)
    }

    /// A step's events in one call: each is told to the host before it is applied, so the
    /// host can undo a failing event alone and attribute what each publishes.
    fn handle_events(events: Vec<wit::Event>) -> Result<(), (u32, wit::ContextError)> {
        let table = handlers::<C>();
        for (i, event) in events.into_iter().enumerate() {
            crate::bindings::carshare::context::events::handling(event.seq);
            crate::rest::begin_call();
            // A list longer than u32::MAX cannot cross the component boundary.
            table
                .dispatch(&Event::from(event))
                .map_err(|e| (i as u32, e.into()))?;
        }
        Ok(())
    }
}

fn operation(op: crate::api::Operation) -> wit::Operation {
    wit::Operation {
        method: op.method.to_string(),
        path: op.path,
        summary: op.summary,
        parameters: op
            .parameters
            .into_iter()
            .map(|p| wit::Parameter {
                name: p.name.to_string(),
                description: p.description.to_string(),
                required: p.required,
                schema: p.schema.to_string(),
            })
            .collect(),
        request_body: op.request_body.map(|s| s.to_string()),
        responses: op
            .responses
            .into_iter()
            .map(|(status, body)| (status, body.map(|s| s.to_string())))
            .collect(),
        partition_by: op.partition_by.map(str::to_string),
    }
}
