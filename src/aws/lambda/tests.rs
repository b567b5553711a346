//! The pure decisions of the Lambda adapter: equal → no call; each differing field → an update.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_lambda::types::builders::{EventSourceMappingConfigurationBuilder, FunctionConfigurationBuilder};
use aws_sdk_lambda::types::{
    Architecture as SdkArchitecture, EnvironmentResponse, EventSourceMappingConfiguration, Filter,
    FilterCriteria, FunctionCodeLocation, FunctionConfiguration, FunctionResponseType, LastUpdateStatus,
    Runtime, State,
};

use super::*;
use crate::plan::function::{Architecture, StartingPosition};

/// A named change to a plan.
type Change<T> = (&'static str, Box<dyn Fn(&mut T)>);

const ROLE: &str = "arn:aws:iam::123456789012:role/kappa-prod-ns-v-projector-1234abcd";

fn plan() -> FunctionPlan {
    let bytes = bootstrap_zip(b"binary");
    FunctionPlan {
        name: "kappa-prod-ns-v-projector-1234abcd".into(),
        role_arn: ROLE.into(),
        runtime: "provided.al2023".into(),
        handler: "bootstrap".into(),
        architecture: Architecture::Arm64,
        memory_mb: 256,
        timeout_seconds: 30,
        environment: BTreeMap::from([("PROJECTION".to_string(), "{}".to_string())]),
        code: FunctionCode::Zip {
            sha256_base64: zip_sha256_base64(&bytes),
            bytes: Arc::new(bytes),
        },
        tags: BTreeMap::new(),
    }
}

fn deployed(plan: &FunctionPlan) -> FunctionConfiguration {
    deployed_builder(plan).build()
}

/// The configuration Lambda reports for a function deployed exactly as `plan` says.
fn deployed_builder(plan: &FunctionPlan) -> FunctionConfigurationBuilder {
    let sha = match &plan.code {
        FunctionCode::Zip { sha256_base64, .. } => sha256_base64.clone(),
        _ => "c29tZXRoaW5nIGVsc2U=".into(),
    };
    FunctionConfiguration::builder()
        .function_name(&plan.name)
        .role(&plan.role_arn)
        .runtime(Runtime::from(plan.runtime.as_str()))
        .handler(&plan.handler)
        .architectures(SdkArchitecture::from(plan.architecture.as_str()))
        .memory_size(plan.memory_mb)
        .timeout(plan.timeout_seconds)
        .environment(
            EnvironmentResponse::builder()
                .set_variables(Some(plan.environment.clone().into_iter().collect()))
                .build(),
        )
        .code_sha256(sha)
        .state(State::Active)
        .last_update_status(LastUpdateStatus::Successful)
}

fn no_tags() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[test]
fn sha256_is_base64_as_lambda_reports_it() {
    // echo -n abc | sha256sum | xxd -r -p | base64
    assert_eq!(
        zip_sha256_base64(b"abc"),
        "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
    );
}

#[test]
fn a_function_deployed_as_planned_needs_no_call() {
    let p = plan();
    let have = deployed(&p);
    assert!(!code_differs(&p, &have, None, &no_tags()));
    assert!(!configuration_differs(&p, &have));
    assert!(!is_busy(&have));
}

#[test]
fn new_code_or_another_architecture_is_a_code_update() {
    let p = plan();
    let mut other = p.clone();
    let bytes = bootstrap_zip(b"binary v2");
    other.code = FunctionCode::Zip {
        sha256_base64: zip_sha256_base64(&bytes),
        bytes: Arc::new(bytes),
    };
    assert!(code_differs(&other, &deployed(&p), None, &no_tags()));
    let mut arch = p.clone();
    arch.architecture = Architecture::X86_64;
    assert!(code_differs(&arch, &deployed(&p), None, &no_tags()));
    // Lambda omits the architecture of x86_64 functions created before architectures existed.
    let legacy = FunctionConfiguration::builder()
        .code_sha256(zip_sha256_base64(&bootstrap_zip(b"binary")))
        .build();
    assert!(!code_differs(&arch, &legacy, None, &no_tags()));
    assert!(
        !configuration_differs(&other, &deployed(&p)),
        "code is not configuration"
    );
}

#[test]
fn image_code_is_compared_by_uri_and_s3_code_by_its_tag() {
    let mut p = plan();
    p.code = FunctionCode::Image {
        uri: "123456789012.dkr.ecr.us-east-1.amazonaws.com/kappa:1".into(),
    };
    let at = |uri: &str| FunctionCodeLocation::builder().image_uri(uri).build();
    let have = deployed(&p);
    assert!(!code_differs(
        &p,
        &have,
        Some(&at("123456789012.dkr.ecr.us-east-1.amazonaws.com/kappa:1")),
        &no_tags()
    ));
    assert!(code_differs(
        &p,
        &have,
        Some(&at("123456789012.dkr.ecr.us-east-1.amazonaws.com/kappa:0")),
        &no_tags()
    ));
    // An image has no handler or runtime to compare.
    let image = FunctionConfiguration::builder()
        .role(ROLE)
        .memory_size(256)
        .timeout(30)
        .environment(
            EnvironmentResponse::builder()
                .variables("PROJECTION", "{}")
                .build(),
        )
        .build();
    assert!(!configuration_differs(&p, &image));

    p.code = FunctionCode::S3 { bucket: "code".into(), key: "v1.zip".into() };
    let tags = planned_tags(&p);
    assert_eq!(
        tags[CODE_SOURCE_TAG],
        FunctionCode::s3_source_tag("code", "v1.zip")
    );
    assert!(!code_differs(&p, &have, None, &tags));
    assert!(code_differs(&p, &have, None, &no_tags()));
    let mut v2 = p.clone();
    v2.code = FunctionCode::S3 { bucket: "code".into(), key: "v2.zip".into() };
    assert!(code_differs(&v2, &have, None, &tags));
}

#[test]
fn each_configuration_field_is_compared() {
    let p = plan();
    let have = deployed(&p);
    let changes: Vec<Change<FunctionPlan>> = vec![
        (
            "role",
            Box::new(|p| p.role_arn = "arn:aws:iam::123456789012:role/other".into()),
        ),
        ("memory", Box::new(|p| p.memory_mb = 512)),
        ("timeout", Box::new(|p| p.timeout_seconds = 60)),
        ("handler", Box::new(|p| p.handler = "main".into())),
        ("runtime", Box::new(|p| p.runtime = "provided.al2".into())),
        (
            "env value",
            Box::new(|p| {
                p.environment.insert("PROJECTION".into(), "{\"v\":2}".into());
            }),
        ),
        (
            "env added",
            Box::new(|p| {
                p.environment.insert("EXTRA".into(), "1".into());
            }),
        ),
        ("env removed", Box::new(|p| p.environment.clear())),
    ];
    for (field, change) in changes {
        let mut want = p.clone();
        change(&mut want);
        assert!(configuration_differs(&want, &have), "{field}");
        assert!(
            !code_differs(&want, &have, None, &no_tags()),
            "{field} is not code"
        );
    }
}

#[test]
fn no_environment_on_either_side_is_equal() {
    let mut p = plan();
    p.environment.clear();
    let have = FunctionConfiguration::builder()
        .role(ROLE)
        .runtime(Runtime::Providedal2023)
        .handler("bootstrap")
        .memory_size(256)
        .timeout(30)
        .build();
    assert!(!configuration_differs(&p, &have));
}

#[test]
fn a_function_being_created_or_updated_is_busy() {
    let p = plan();
    let pending = deployed_builder(&p).state(State::Pending).build();
    assert!(is_busy(&pending));
    let updating = deployed_builder(&p)
        .last_update_status(LastUpdateStatus::InProgress)
        .build();
    assert!(is_busy(&updating));
    let failed = deployed_builder(&p)
        .last_update_status(LastUpdateStatus::Failed)
        .build();
    assert!(!is_busy(&failed), "a failed update may be retried");
}

#[test]
fn lambdas_transient_errors_are_recognized() {
    assert!(is_transient(
        "ResourceConflictException",
        "An update is in progress"
    ));
    assert!(is_transient("ServiceException", ""));
    assert!(is_transient(
        "InvalidParameterValueException",
        "The role defined for the function cannot be assumed by Lambda."
    ));
    assert!(!is_transient(
        "InvalidParameterValueException",
        "Unzipped size must be smaller"
    ));
    assert!(!is_transient("AccessDeniedException", ""));
    assert!(is_transient(
        "InvalidParameterValueException",
        "The provided execution role does not have permissions to call SendMessage on SQS"
    ));
}

fn mapping_plan() -> MappingPlan {
    MappingPlan {
        function_name: "kappa-f".into(),
        event_source_arn: "arn:aws:dynamodb:us-east-1:123456789012:table/log/stream/2024".into(),
        batch_size: 100,
        maximum_batching_window_seconds: 1,
        starting_position: Some(StartingPosition::TrimHorizon),
        filter_patterns: vec![
            r#"{"dynamodb":{"NewImage":{"type":{"S":["player"]}}}}"#.into(),
            r#"{"eventName":["INSERT"]}"#.into(),
        ],
        report_batch_item_failures: true,
        bisect_batch_on_function_error: false,
        on_failure: Some(crate::plan::function::StreamFailurePlan::to_queue(
            "arn:aws:sqs:us-east-1:123456789012:kappa-failures",
        )),
    }
}

fn mapping(plan: &MappingPlan) -> EventSourceMappingConfiguration {
    mapping_builder(plan).build()
}

/// The mapping Lambda reports for `plan` (patterns reordered and reformatted: still equal).
fn mapping_builder(plan: &MappingPlan) -> EventSourceMappingConfigurationBuilder {
    let filters = plan
        .filter_patterns
        .iter()
        .rev()
        .map(|p| {
            let v: serde_json::Value = serde_json::from_str(p).unwrap();
            Filter::builder()
                .pattern(serde_json::to_string_pretty(&v).unwrap())
                .build()
        })
        .collect();
    let mut b = EventSourceMappingConfiguration::builder()
        .uuid("u-1")
        .function_arn("arn:aws:lambda:us-east-1:123456789012:function:kappa-f")
        .event_source_arn(&plan.event_source_arn)
        .batch_size(plan.batch_size)
        .maximum_batching_window_in_seconds(plan.maximum_batching_window_seconds)
        .filter_criteria(FilterCriteria::builder().set_filters(Some(filters)).build())
        .state("Enabled");
    if plan.report_batch_item_failures {
        b = b.function_response_types(FunctionResponseType::ReportBatchItemFailures);
    }
    if plan.bisect_batch_on_function_error {
        b = b.bisect_batch_on_function_error(true);
    }
    if let Some(f) = &plan.on_failure {
        b = b
            .maximum_retry_attempts(f.maximum_retry_attempts)
            .maximum_record_age_in_seconds(f.maximum_record_age_seconds)
            .destination_config(on_failure_destination(&f.destination_arn));
    }
    b
}

#[test]
fn a_mapping_as_planned_needs_no_update() {
    let p = mapping_plan();
    let have = mapping(&p);
    assert!(!mapping_differs(&p, &have));
    assert!(!mapping_busy(&have));
    assert!(is_of_function(&have, "kappa-f"));
    assert!(is_of_function(
        &have,
        "arn:aws:lambda:us-east-1:123456789012:function:kappa-f"
    ));
    assert!(
        !is_of_function(&have, "f"),
        "a suffix of the name is another function"
    );
    let other_start = MappingPlan {
        starting_position: Some(StartingPosition::Latest),
        ..p.clone()
    };
    assert!(
        !mapping_differs(&other_start, &have),
        "the starting position is fixed at creation"
    );
    // No window reported is a window of 0.
    let zero = MappingPlan { maximum_batching_window_seconds: 0, ..p.clone() };
    let unset = mapping_builder(&zero)
        .set_maximum_batching_window_in_seconds(None)
        .build();
    assert!(!mapping_differs(&zero, &unset));
}

#[test]
fn each_mapping_setting_is_compared() {
    let p = mapping_plan();
    let have = mapping(&p);
    let changes: Vec<Change<MappingPlan>> = vec![
        ("batch size", Box::new(|p| p.batch_size = 10)),
        ("window", Box::new(|p| p.maximum_batching_window_seconds = 5)),
        (
            "pattern changed",
            Box::new(|p| {
                p.filter_patterns[0] = r#"{"dynamodb":{"NewImage":{"type":{"S":["game"]}}}}"#.into();
            }),
        ),
        (
            "pattern removed",
            Box::new(|p| {
                p.filter_patterns.pop();
            }),
        ),
        ("patterns cleared", Box::new(|p| p.filter_patterns.clear())),
        (
            "response types",
            Box::new(|p| p.report_batch_item_failures = false),
        ),
        (
            "bisect on error",
            Box::new(|p| p.bisect_batch_on_function_error = true),
        ),
        (
            "retries",
            Box::new(|p| p.on_failure.as_mut().unwrap().maximum_retry_attempts = 3),
        ),
        (
            "record age",
            Box::new(|p| p.on_failure.as_mut().unwrap().maximum_record_age_seconds = 3600),
        ),
        (
            "on-failure destination",
            Box::new(|p| p.on_failure.as_mut().unwrap().destination_arn = "arn:other".into()),
        ),
    ];
    for (field, change) in changes {
        let mut want = p.clone();
        change(&mut want);
        assert!(mapping_differs(&want, &have), "{field}");
    }
    let disabled = mapping_builder(&p).state("Disabled").build();
    assert!(
        mapping_differs(&p, &disabled),
        "a disabled mapping is enabled again"
    );
    let creating = mapping_builder(&p).state("Creating").build();
    assert!(mapping_busy(&creating));
    let queue = MappingPlan {
        starting_position: None,
        bisect_batch_on_function_error: true,
        ..p.clone()
    };
    assert!(
        !mapping_differs(&queue, &mapping(&p)),
        "a queue mapping takes no bisect setting"
    );
}

#[test]
fn a_stream_mapping_without_failure_handling_gets_it_and_a_queue_mapping_never() {
    let p = mapping_plan();
    let bare = mapping(&MappingPlan { on_failure: None, ..p.clone() });
    assert!(mapping_differs(&p, &bare), "none set yet: retries are infinite");
    let queue = MappingPlan { starting_position: None, ..p.clone() };
    assert!(
        stream_failure(&queue).is_none() && !mapping_differs(&queue, &bare),
        "a queue mapping's failures follow the queue's redrive policy"
    );
    let unmanaged = MappingPlan { on_failure: None, ..p.clone() };
    assert!(!mapping_differs(&unmanaged, &mapping(&p)));
}

#[test]
fn asynchronous_failure_handling_is_compared_field_by_field() {
    let want = crate::plan::lambdas::projector_async_failures("f", "arn:q");
    assert!(!async_failures_differ(
        &want,
        Some(2),
        Some(21_600),
        Some("arn:q")
    ));
    assert!(async_failures_differ(&want, None, Some(21_600), Some("arn:q")));
    assert!(async_failures_differ(&want, Some(0), Some(21_600), Some("arn:q")));
    assert!(async_failures_differ(&want, Some(2), Some(60), Some("arn:q")));
    assert!(async_failures_differ(&want, Some(2), Some(21_600), None));
    assert!(async_failures_differ(
        &want,
        Some(2),
        Some(21_600),
        Some("arn:other")
    ));
}

#[test]
fn duplicate_patterns_count() {
    let a = serde_json::json!({"a": [1]});
    let b = serde_json::json!({"b": [1]});
    assert!(same_patterns(&[a.clone(), b.clone()], &[b.clone(), a.clone()]));
    assert!(!same_patterns(&[a.clone(), a.clone()], &[a.clone(), b.clone()]));
    assert!(!same_patterns(std::slice::from_ref(&a), &[a.clone(), a.clone()]));
}
