#!/usr/bin/env bash
# Wheel smoke test: build the sdist and wheel, install the wheel (with its postgres extra and the
# pinned constraints) into a fresh virtualenv, then from that virtualenv alone run
# `airflow providers list` and `airflow dags test` of ci/wheel_smoke_dag.py against the emulator.
#
# It proves what a user who installs the wheel gets: the package data, the provider entry point
# and the declared dependencies suffice, with no repository checkout on the path.
#
# The emulator is not part of the wheel under test: it is its own distribution
# (`genesys-llm-emulator`, emulator/), run from the development virtualenv ($DEV_PY, default
# .venv/bin/python), where `make` installs it.
#
# Bounded: every step has a timeout (STEP_TIMEOUT seconds, default 600), and the whole script
# removes its temporary directory and stops the emulator on any exit. Set UV_OFFLINE=1 to install
# from uv's cache only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEV_PY=${DEV_PY:-$ROOT/.venv/bin/python}
UV=${UV:-$ROOT/.venv/bin/uv}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
DAG_ID=genesys_llm_wheel_smoke
SECRET=wheel-smoke-secret-$RANDOM$RANDOM

WORK=$(mktemp -d "${TMPDIR:-/tmp}/genesys-wheel-smoke.XXXXXX")
EMULATOR_PID=
cleanup() {
    if [[ -n $EMULATOR_PID ]]; then kill "$EMULATOR_PID" 2>/dev/null || true; wait "$EMULATOR_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
step() { echo "wheel-smoke: $*" >&2; }
fail() { echo "wheel-smoke: FAILED: $*" >&2; exit 1; }
# Nothing from the checkout or the caller's environment may leak into the fresh virtualenv.
unset PYTHONPATH VIRTUAL_ENV AIRFLOW_HOME

step "building the sdist and the wheel from the files git tracks (or would track)"
mkdir -p "$WORK/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' path; do
    [[ -e $path ]] && printf '%s\0' "$path"
done | tar --null -T - -cf - | tar -xf - -C "$WORK/src"
# No arguments: uv builds the sdist, then the wheel from the unpacked sdist, so a file missing
# from the sdist fails here.
timeout "$STEP_TIMEOUT" "$UV" build --quiet --out-dir "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/*.whl)
ls "$WORK"/dist/*.tar.gz >/dev/null || fail "no sdist was built"

step "installing $(basename "$WHEEL")[postgres] into a fresh virtualenv with requirements/constraints.txt"
timeout "$STEP_TIMEOUT" "$UV" venv --quiet --python "$DEV_PY" "$WORK/venv"
timeout "$STEP_TIMEOUT" "$UV" pip install --quiet --python "$WORK/venv/bin/python" \
    -c requirements/constraints.txt "$WHEEL[postgres]"
cd "$WORK"  # away from the checkout: `import airflow_provider_genesys_llm` must find the wheel
INSTALLED=$("$WORK/venv/bin/python" -c 'import airflow_provider_genesys_llm as p; print(p.__file__)')
[[ $INSTALLED == "$WORK/venv/"* ]] || fail "the provider was imported from $INSTALLED, not the new virtualenv"

export AIRFLOW_HOME=$WORK/airflow-home
export AIRFLOW__CORE__DAGS_FOLDER=$WORK/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export PYTHONPYCACHEPREFIX=$WORK/pycache  # Airflow compiles itself on each start otherwise
mkdir -p "$AIRFLOW__CORE__DAGS_FOLDER"
cp "$ROOT/ci/wheel_smoke_dag.py" "$AIRFLOW__CORE__DAGS_FOLDER/"

step "airflow providers list"
timeout "$STEP_TIMEOUT" "$WORK/venv/bin/airflow" providers list >"$WORK/providers.txt" 2>"$WORK/providers.err" \
    || { cat "$WORK/providers.err" >&2; fail "airflow providers list exited non-zero"; }
grep -q "airflow-provider-genesys-llm" "$WORK/providers.txt" \
    || { cat "$WORK/providers.txt" >&2; fail "airflow providers list does not list airflow-provider-genesys-llm"; }

step "starting the emulator from $DEV_PY"
(cd "$ROOT" && exec "$DEV_PY" -m genesys_llm_emulator --port 0 --client "smoke:$SECRET") >"$WORK/emulator.log" 2>&1 &
EMULATOR_PID=$!
URL=
for _ in $(seq 1 300); do  # up to 30 s for "emulator listening on http://HOST:PORT"
    URL=$(sed -n 's/^emulator listening on \(http:\/\/.*\)$/\1/p' "$WORK/emulator.log")
    [[ -n $URL ]] && break
    kill -0 "$EMULATOR_PID" 2>/dev/null || { cat "$WORK/emulator.log" >&2; fail "the emulator exited"; }
    sleep 0.1
done
[[ -n $URL ]] || { cat "$WORK/emulator.log" >&2; fail "the emulator did not start within 30 s"; }
export AIRFLOW_CONN_GENESYS_LLM_DEFAULT="{\"conn_type\": \"genesys_llm\", \"login\": \"smoke\", \"password\": \"$SECRET\",
 \"extra\": {\"api_base_url\": \"$URL\", \"login_base_url\": \"$URL\", \"stream_base_url\": \"ws${URL#http}\"}}"
export AIRFLOW_VAR_GENESYS_LLM_ID_KEY=wheel-smoke-id-key-$RANDOM$RANDOM$RANDOM$RANDOM

step "airflow db migrate, then airflow dags test $DAG_ID"
timeout "$STEP_TIMEOUT" "$WORK/venv/bin/airflow" db migrate >"$WORK/migrate.log" 2>&1 \
    || { tail -40 "$WORK/migrate.log" >&2; fail "airflow db migrate exited non-zero"; }
timeout "$STEP_TIMEOUT" "$WORK/venv/bin/airflow" dags test "$DAG_ID" 2026-01-02 >"$WORK/dag.log" 2>&1 \
    || { tail -60 "$WORK/dag.log" >&2; fail "airflow dags test $DAG_ID exited non-zero"; }
grep -q "state=success\|DagRunState.SUCCESS\|dag_run_state=success" "$WORK/dag.log" \
    || { tail -60 "$WORK/dag.log" >&2; fail "the DAG run did not end in success"; }
! grep -q "$SECRET" "$WORK/dag.log" || fail "the client secret appears in the DAG run's output"
step "OK: $(basename "$WHEEL") and its sdist build, install, list the provider and run $DAG_ID"
