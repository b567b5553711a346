#!/bin/sh
# The `bootstrap` of the built-in Lambda functions on the local stack (tests, make demo): the operator's
# debug build is far over Lambda's 50 MB upload limit, so the operator uploads this script instead. The
# local stack's Lambda harness (hack/local_lambda.py) sets KAPPA_LOCAL_LAMBDA_BINARY to the operator
# binary to run (never the operator itself); this script then becomes it. Anywhere else (on AWS) it fails
# with a clear message: on AWS the functions run the operator's release binary.
if [ -n "${KAPPA_LOCAL_LAMBDA_BINARY:-}" ]; then
  if [ -x "$KAPPA_LOCAL_LAMBDA_BINARY" ]; then
    exec "$KAPPA_LOCAL_LAMBDA_BINARY"
  fi
  echo "kappa-operator stand-in: KAPPA_LOCAL_LAMBDA_BINARY=$KAPPA_LOCAL_LAMBDA_BINARY is not an executable file; build it (cargo build --bin kappa-operator) or write its path to .stack/lambda-binary" >&2
  exit 1
fi
echo "kappa-operator stand-in: the local stack does not run Lambda functions" >&2
exit 1
