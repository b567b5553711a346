#!/bin/sh
# A stand-in for the built-in Lambda code on the local stack (tests, make demo): the stack cannot run
# Lambda functions, and the operator's debug build is far over Lambda's 50 MB upload limit. Functions
# are created from it and never invoked. On AWS the functions run the operator's release binary.
echo "kappa-operator stand-in: the local stack does not run Lambda functions" >&2
exit 1
