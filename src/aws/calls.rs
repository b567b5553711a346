//! Counts every AWS call by service and operation (`kappa_aws_calls_total`), and whether it mutates, so
//! tests and users can see that a reconcile of an unchanged object changes nothing on AWS.

use std::sync::Arc;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::metrics::Metrics;

/// An SDK interceptor feeding [`Metrics::aws_call`].
#[derive(Clone, Debug)]
pub struct CallCounter {
    metrics: Arc<Metrics>,
}

impl CallCounter {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        CallCounter { metrics }
    }
}

/// Read-only operations by name; everything else changes something.
pub fn is_mutating(operation: &str) -> bool {
    !["Describe", "List", "Get", "Query", "Scan", "BatchGet"]
        .iter()
        .any(|p| operation.starts_with(p))
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "kappa-call-counter"
    }

    // The operation's metadata is in the config bag once the request is being sent (not before
    // execution), and this runs once per attempt's transmission: retries count as calls, as AWS bills them.
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(md) = cfg.load::<Metadata>() {
            self.metrics
                .aws_call(md.service(), md.name(), is_mutating(md.name()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_mutating;

    #[test]
    fn reads_are_not_mutations() {
        for op in [
            "DescribeTable",
            "ListTagsOfResource",
            "GetQueueUrl",
            "ListTopics",
            "DescribeContinuousBackups",
        ] {
            assert!(!is_mutating(op), "{op}");
        }
        for op in [
            "CreateTable",
            "UpdateTable",
            "TagResource",
            "DeleteTopic",
            "CreateQueue",
            "PutItem",
        ] {
            assert!(is_mutating(op), "{op}");
        }
    }
}
