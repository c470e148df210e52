#!/usr/bin/env bash
# Deploys manda-processing to one environment with gcloud:
#   1. the APIs it uses, one runtime service account per function plus one for the
#      Scheduler, each account's access to exactly the secrets it reads, the account
#      that builds the functions' images and the account Cloud Build deploys as;
#   2. pg-boss's schema, where this package owns it (PGBOSS_MIGRATE=true);
#   3. the HTTP functions, as Cloud Run functions (gen2);
#   4. drain's and supervise's invoker bindings and the Cloud Scheduler jobs that call
#      them every minute;
#   5. optionally, Supabase's webhook triggers (WEBHOOK_TRIGGERS=apply).
#
#   deploy/deploy.sh ENV [--dry-run] [--set KEY=VALUE]...
#
# ENV names deploy/env/ENV.env. --dry-run prints every command, one per line, and calls
# nothing (it cannot ask what exists, so it shows the commands for a project where
# nothing does; a real run updates instead of creating). --set overrides one key of the
# env file for this run; an empty value keeps the file's, so cloudbuild.yaml can pass
# every substitution whether or not it is set. Every step is idempotent: running the
# script again converges on the same state, which is also how a failed run is resumed.
set -euo pipefail

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
root=$(dirname "$here")

die() {
    echo "deploy.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '/^#   deploy/p' "${BASH_SOURCE[0]}" | sed 's/^#   /usage: /'
    local file names=()
    for file in "$here"/env/*.env; do names+=("$(basename "$file" .env)"); done
    echo "environments: ${names[*]}"
}

# --- the functions ------------------------------------------------------------------------
# Deploy order: drain and supervise before the Scheduler jobs that call them.
FUNCTIONS=(health ready enqueue jobs schedules webhook drain supervise)
# Settings each function reads from Secret Manager; NAME? only when SECRET_NAME is set.
# Each function has its own runtime account, which may read these secrets and no others.
# drain authenticates the Scheduler by its OIDC token (settings below), so DRAIN_TOKEN
# is only for a caller that cannot send one.
declare -A SECRETS_OF=(
    [health]=""
    [ready]="DATABASE_URL"
    [enqueue]="DATABASE_URL API_KEYS"
    [jobs]="DATABASE_URL API_KEYS"
    [schedules]="DATABASE_URL API_KEYS"
    [webhook]="DATABASE_URL WEBHOOK_SECRET"
    [drain]="DATABASE_URL DRAIN_LISTEN_DATABASE_URL? DRAIN_TOKEN?"
    [supervise]="DATABASE_URL DRAIN_TOKEN?"
)
# public: anyone may call it, and the function checks its own credential (API key,
# for jobs and schedules enqueue's; webhook secret) or needs none (health, ready).
# private: Cloud Run lets through only callers holding roles/run.invoker on it, which
# for drain and supervise is the Scheduler's account.
declare -A ACCESS_OF=([health]=public [ready]=public [enqueue]=public [jobs]=public [schedules]=public
    [webhook]=public [drain]=private [supervise]=private)
# The private functions the Scheduler calls every minute, each through its own job.
SCHEDULED=(drain supervise)
# Settings that hold credentials: never accepted as plain APP_ values.
SECRET_SETTINGS=(DATABASE_URL API_KEYS WEBHOOK_SECRET DRAIN_TOKEN DRAIN_LISTEN_DATABASE_URL)
# Keys that size a function; FUNCTION_KEY (e.g. DRAIN_TIMEOUT) overrides KEY for one.
SIZE_KEYS=(MEMORY CPU TIMEOUT MIN_INSTANCES MAX_INSTANCES CONCURRENCY)

# --- settings: defaults, then the env file, then --set --------------------------------------
# Every key an env file may set (besides APP_* and FUNCTION_KEY sizes) is listed here.
REQUIRED=(PROJECT_ID PROJECT_NUMBER REGION SECRET_DATABASE_URL SECRET_API_KEYS SECRET_WEBHOOK_SECRET)
declare -A conf=(
    [PROJECT_ID]=""
    [PROJECT_NUMBER]=""
    [REGION]=""
    [RUNTIME]=python312
    # concurrency > 1 needs a whole CPU on Cloud Run.
    [MEMORY]=512Mi
    [CPU]=1
    [TIMEOUT]=30s
    [MIN_INSTANCES]=0
    [MAX_INSTANCES]=5
    [CONCURRENCY]=8
    # drain: one call per instance (Cloud Run concurrency; the handler threads inside a
    # call are APP_DRAIN_CONCURRENCY). It works for APP_DRAIN_BUDGET_SECONDS, under its
    # timeout, so a call ends on its own before Cloud Run cuts it off. The budget is longer
    # than the one-minute schedule, so each call is still watching when the next starts:
    # jobs are picked up within a second at all times, never waiting for the next call.
    # Two calls overlap at most, hence DRAIN_MAX_INSTANCES >= 2.
    [DRAIN_TIMEOUT]=90s
    [DRAIN_CONCURRENCY]=1
    [APP_DRAIN_BUDGET_SECONDS]=80
    # supervise: pg-boss's background passes in rounds for APP_SUPERVISE_BUDGET_SECONDS,
    # ending before the next minute's call (overlap would be safe, only wasteful).
    [SUPERVISE_TIMEOUT]=90s
    [SUPERVISE_CONCURRENCY]=1
    [APP_SUPERVISE_BUDGET_SECONDS]=50
    [SECRET_DATABASE_URL]=""
    [SECRET_API_KEYS]=""
    [SECRET_WEBHOOK_SECRET]=""
    # The database URL used for pg-boss's migration and the webhook triggers (schema
    # changes); empty: the functions' own, SECRET_DATABASE_URL.
    [SECRET_ADMIN_DATABASE_URL]=""
    # Optional: a session-capable URL for drain's LISTEN when DATABASE_URL is Supabase's
    # transaction pooler, and a static token for callers of drain without OIDC.
    [SECRET_DRAIN_LISTEN_DATABASE_URL]=""
    [SECRET_DRAIN_TOKEN]=""
    # latest: a new version reaches each instance at its next cold start (see README).
    [SECRET_VERSION]=latest
    # set-secrets: Cloud Run injects the values (--set-secrets ENV=SECRET:VERSION).
    # sm-refs: plain variables hold sm://PROJECT/SECRET[#VERSION], resolved by the package
    # at cold start (shared/secrets.py); the same accounts need the same access.
    [SECRET_MODE]=set-secrets
    [SERVICE_ACCOUNT_PREFIX]=processing
    # The account Cloud Build builds the functions' images as (--build-service-account).
    # Empty: SERVICE_ACCOUNT_PREFIX-build@, created here. New projects give builds no
    # default account with build rights, so one is always named.
    [BUILD_SERVICE_ACCOUNT]=""
    # What it needs on the project: Cloud Build's builder role (logs, the uploaded source,
    # Artifact Registry). roles/run.builder is Cloud Run's narrower equivalent.
    [BUILD_ROLES]="roles/cloudbuild.builds.builder"
    # SERVICE_ACCOUNT_PREFIX-deployer@ is what cloudbuild.yaml runs as
    # (gcloud builds submit --service-account=...): it reruns this script, so it holds
    # the roles this script uses, and Cloud Build's builder role for its own build.
    [DEPLOYER_ROLES]="roles/cloudbuild.builds.builder roles/cloudfunctions.admin roles/run.admin roles/iam.serviceAccountAdmin roles/iam.serviceAccountUser roles/resourcemanager.projectIamAdmin roles/secretmanager.admin roles/cloudscheduler.admin roles/serviceusage.serviceUsageAdmin"
    # A new account (or a new grant) takes a while to be known everywhere in IAM: a use
    # that fails is tried again up to IAM_RETRY_ATTEMPTS times, waiting
    # IAM_RETRY_SECONDS, doubling up to a minute, in between (about six minutes in all).
    [IAM_RETRY_ATTEMPTS]=10
    [IAM_RETRY_SECONDS]=5
    # A function deploy that fails is tried this many times in all (a runtime or build
    # account the functions service cannot see yet).
    [DEPLOY_ATTEMPTS]=3
    [APP_PGBOSS_SCHEMA]=pgboss
    [APP_LOG_LEVEL]=INFO
    [SCHEDULER_JOB]=processing-drain
    [SUPERVISE_SCHEDULER_JOB]=processing-supervise
    [SCHEDULE]="* * * * *"
    [SCHEDULER_TIME_ZONE]=Etc/UTC
    # Longer than drain's timeout: the Scheduler must not give up on a drain that is
    # still within its budget (and retry it on top of itself).
    [SCHEDULER_ATTEMPT_DEADLINE]=120s
    # A failed call is retried a couple of times, never past the next minute's run
    # (Cloud Scheduler stops retrying at the next scheduled time). Overlap is safe.
    [SCHEDULER_MAX_RETRY_ATTEMPTS]=2
    [SCHEDULER_MIN_BACKOFF]=5s
    [SCHEDULER_MAX_BACKOFF]=20s
    [SCHEDULER_MAX_DOUBLINGS]=2
    # true only where this package owns pg-boss's schema (green-field databases); false
    # where the Node app runs pg-boss's migrations itself.
    [PGBOSS_MIGRATE]=false
    # apply: (re)create Supabase's webhook triggers with psql; skip: print the command.
    [WEBHOOK_TRIGGERS]=skip
    [WEBHOOK_TIMEOUT_MS]=5000
    # Name of the Supabase Vault secret holding the webhook secret (read at trigger time).
    [WEBHOOK_VAULT_SECRET]=processing_webhook_secret
)

known_key() {
    local key=$1 fn size
    [[ -v "conf[$key]" || $key == APP_* ]] && return 0
    for fn in "${FUNCTIONS[@]}"; do
        for size in "${SIZE_KEYS[@]}"; do
            [[ $key == "${fn^^}_$size" ]] && return 0
        done
    done
    return 1
}

set_key() {
    local key=$1 value=$2 where=$3 secret
    [[ $key =~ ^[A-Z][A-Z0-9_]*$ ]] || die "$where: bad key '$key'"
    known_key "$key" || die "$where: unknown key $key (typo?)"
    for secret in "${SECRET_SETTINGS[@]}"; do
        [[ $key == "APP_$secret" ]] && die "$where: $secret is a credential: name its secret in SECRET_$secret instead"
    done
    conf[$key]=$value
}

# Plain KEY=VALUE lines; the value is everything after the first '=', taken literally.
load_env_file() {
    local file=$1 line n=0
    while IFS= read -r line || [[ -n $line ]]; do
        n=$((n + 1))
        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
        [[ $line =~ ^([^=]+)=(.*)$ ]] || die "$file:$n: expected KEY=VALUE"
        set_key "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "$file:$n"
    done <"$file"
}

env_name=""
dry_run=false
overrides=()
while (($#)); do
    case $1 in
    --dry-run) dry_run=true ;;
    --set)
        (($# >= 2)) || die "--set needs KEY=VALUE"
        overrides+=("$2")
        shift
        ;;
    --set=*) overrides+=("${1#--set=}") ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
        [[ -z $env_name ]] || die "one environment at a time"
        env_name=$1
        ;;
    esac
    shift
done
[[ -n $env_name ]] || {
    usage >&2
    exit 2
}
env_file="$here/env/$env_name.env"
[[ $env_name =~ ^[a-z0-9-]+$ && -f $env_file ]] || die "no environment '$env_name' (no $env_file)"

load_env_file "$env_file"
for kv in "${overrides[@]}"; do
    [[ $kv == *=* ]] || die "--set $kv: expected KEY=VALUE"
    if [[ -n ${kv#*=} ]]; then set_key "${kv%%=*}" "${kv#*=}" "--set"; fi
done

for key in "${REQUIRED[@]}"; do
    [[ -n ${conf[$key]} ]] || die "$key is not set in $env_file"
done
[[ ${conf[PROJECT_NUMBER]} =~ ^[0-9]+$ ]] || die "PROJECT_NUMBER must be the project's number"
for fn in "${FUNCTIONS[@]}"; do
    timeout=${conf[${fn^^}_TIMEOUT]:-${conf[TIMEOUT]}}
    [[ $timeout =~ ^[1-9][0-9]*s$ ]] || die "${fn^^}_TIMEOUT/TIMEOUT must be whole seconds like 60s, got '$timeout'"
done
case ${conf[SECRET_MODE]} in set-secrets | sm-refs) ;; *) die "SECRET_MODE must be set-secrets or sm-refs" ;; esac
case ${conf[PGBOSS_MIGRATE]} in true | false) ;; *) die "PGBOSS_MIGRATE must be true or false" ;; esac
case ${conf[WEBHOOK_TRIGGERS]} in apply | skip) ;; *) die "WEBHOOK_TRIGGERS must be apply or skip" ;; esac
for key in IAM_RETRY_ATTEMPTS DEPLOY_ATTEMPTS; do
    [[ ${conf[$key]} =~ ^[1-9][0-9]*$ ]] || die "$key must be a whole number of at least 1"
done
[[ ${conf[IAM_RETRY_SECONDS]} =~ ^[0-9]+$ ]] || die "IAM_RETRY_SECONDS must be whole seconds"
if [[ -n ${conf[APP_WEBHOOK_ROUTES_FILE]:-} && ! -f $root/${conf[APP_WEBHOOK_ROUTES_FILE]} ]]; then
    die "APP_WEBHOOK_ROUTES_FILE: $root/${conf[APP_WEBHOOK_ROUTES_FILE]} does not exist (it is deployed with the source)"
fi

project=${conf[PROJECT_ID]}
region=${conf[REGION]}

# A function's size setting: FUNCTION_KEY if set, else KEY.
size_of() {
    local fn=$1 key=$2 specific="${1^^}_$2"
    echo "${conf[$specific]:-${conf[$key]}}"
}

# The secret settings a function gets here: its list, less optional ones not configured.
secrets_of() {
    local setting
    for setting in ${SECRETS_OF[$1]}; do
        if [[ $setting != *"?" ]]; then
            echo "$setting"
        elif [[ -n ${conf[SECRET_${setting%"?"}]} ]]; then
            echo "${setting%"?"}"
        fi
    done
}

# Whether function $1 gets setting $2. A setting named after a function (DRAIN_*,
# WEBHOOK_*, ENQUEUE_*) goes to that function only; the others go to all of them. drain
# also gets the webhook's routes: it turns the outbox's missed events into their jobs.
settings_for() {
    local owner=${2%%_*}
    owner=${owner,,}
    [[ $1 == drain && $2 == WEBHOOK_ROUTES* ]] && return 0
    [[ -z ${ACCESS_OF[$owner]:-} || $owner == "$1" ]]
}

sa_email() { echo "${conf[SERVICE_ACCOUNT_PREFIX]}-$1@$project.iam.gserviceaccount.com"; }
scheduler_sa=$(sa_email scheduler)
build_sa=${conf[BUILD_SERVICE_ACCOUNT]:-$(sa_email build)}
# The accounts this script owns: one per function, the Scheduler's, the image builder's
# (unless BUILD_SERVICE_ACCOUNT names another) and the deployer's.
ACCOUNTS=("${FUNCTIONS[@]}" scheduler deployer)
[[ -n ${conf[BUILD_SERVICE_ACCOUNT]} ]] || ACCOUNTS+=(build)
# Cloud Run's fixed URL of a function (https://SERVICE-PROJECT_NUMBER.REGION.run.app). It
# is known before the first deploy, so the Scheduler's audience and drain's own settings
# never wait for one; the deploy checks that the service really answers to it.
function_url() { echo "https://$1-${conf[PROJECT_NUMBER]}.$region.run.app"; }
drain_url=$(function_url drain)

# --- running and printing commands ------------------------------------------------------
# Secret values fetched during the run, and what to print in their place.
masked_values=()
masked_labels=()

quote() {
    local arg=$1 i
    for i in "${!masked_values[@]}"; do
        arg=${arg//"${masked_values[$i]}"/"${masked_labels[$i]}"}
    done
    if [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
        printf '%s' "$arg"
    else
        printf "'%s'" "${arg//\'/\'\\\'\'}"
    fi
}

# One command per line, quoted so that the line can be pasted into a shell.
show() {
    local line="" arg
    for arg in "$@"; do
        line+="${line:+ }$(quote "$arg")"
    done
    if $dry_run; then echo "$line"; else echo "+ $line"; fi
}

note() { echo "# $*"; }

run() {
    show "$@"
    $dry_run || "$@"
}

# Runs a command until it succeeds, at most $1 times, waiting between tries (IAM_RETRY_*):
# what a new service account or grant is used for can fail until IAM has propagated it.
# A dry run prints the command once.
retry() {
    local attempts=$1 attempt=1 wait=${conf[IAM_RETRY_SECONDS]}
    shift
    show "$@"
    $dry_run && return 0
    until "$@"; do
        ((attempt < attempts)) || die "still failing after $attempts attempts: $(quote "$1") $(quote "$2") $(quote "$3") ..."
        note "failed (attempt $attempt of $attempts); IAM may still be propagating, trying again in ${wait}s"
        sleep "$wait"
        wait=$((wait * 2 > 60 ? 60 : wait * 2))
        attempt=$((attempt + 1))
    done
}

# A read-only question (does X exist?). A dry run prints it and answers "no".
exists() {
    show "$@"
    $dry_run && return 1
    "$@" >/dev/null 2>&1
}

# Reads a secret's current value into the variable named $1, printing only the command.
read_secret() {
    local var=$1 secret=$2 value
    show gcloud secrets versions access latest --secret="$secret" --project="$project"
    if $dry_run; then
        value="<value of secret $secret>"
    else
        value=$(gcloud secrets versions access latest --secret="$secret" --project="$project")
        [[ -n $value ]] || die "secret $secret is empty"
        mask "$value" "<value of secret $secret>"
    fi
    printf -v "$var" '%s' "$value"
}

# From now on, print LABEL wherever VALUE would appear.
mask() {
    masked_values+=("$1")
    masked_labels+=("$2")
}

# gcloud's list flags split on commas; a list whose values contain one uses gcloud's
# alternative delimiter syntax (^DELIM^a=1DELIMb=2, see `gcloud topic escaping`).
join_list() {
    local item delim
    for delim in ',' '|' ';' '~' '#'; do
        for item in "$@"; do
            [[ $item == *"$delim"* ]] && continue 2
        done
        local IFS=$delim
        if [[ $delim == , ]]; then echo "$*"; else echo "^$delim^$*"; fi
        return 0
    done
    die "cannot find a delimiter for: $*"
}

cd "$root" # --source=. is the repository root

if $dry_run; then
    note "dry run for '$env_name' (project $project, region $region): nothing is called"
else
    # Every tool a step runs, checked before anything changes.
    command -v gcloud >/dev/null || die "gcloud not found"
    if [[ ${conf[WEBHOOK_TRIGGERS]} == apply ]]; then
        command -v psql >/dev/null || die "psql not found (needed for WEBHOOK_TRIGGERS=apply; Debian: postgresql-client)"
    fi
    if [[ ${conf[PGBOSS_MIGRATE]} == true ]]; then
        [[ -x deploy/pgboss/pgboss ]] || die "deploy/pgboss/pgboss is missing (needed for PGBOSS_MIGRATE=true)"
    fi
fi

# --- 1. APIs, service accounts, access ----------------------------------------------------
# Every API used below, first: Cloud Resource Manager answers `projects describe` and
# the project-level grants, Logging takes the builds' logs (a user-named build account
# logs to Cloud Logging only), Storage holds the uploaded source.
run gcloud services enable cloudresourcemanager.googleapis.com serviceusage.googleapis.com \
    iam.googleapis.com logging.googleapis.com storage.googleapis.com cloudbuild.googleapis.com \
    artifactregistry.googleapis.com cloudfunctions.googleapis.com run.googleapis.com \
    cloudscheduler.googleapis.com secretmanager.googleapis.com --project="$project"

# The URLs below are built from PROJECT_NUMBER: a wrong one must stop the run before
# anything else changes, not after the functions are deployed.
show gcloud projects describe "$project" --format="value(projectNumber)"
if ! $dry_run; then
    number=$(gcloud projects describe "$project" --format="value(projectNumber)")
    [[ $number == "${conf[PROJECT_NUMBER]}" ]] ||
        die "PROJECT_NUMBER is ${conf[PROJECT_NUMBER]} in $env_file but $project's number is $number"
fi

for account in "${ACCOUNTS[@]}"; do
    email=$(sa_email "$account")
    if ! exists gcloud iam service-accounts describe "$email" --project="$project"; then
        run gcloud iam service-accounts create "${conf[SERVICE_ACCOUNT_PREFIX]}-$account" --project="$project" \
            --display-name="manda-processing $account"
        # Created is not yet visible everywhere: wait until IAM answers for it.
        retry "${conf[IAM_RETRY_ATTEMPTS]}" gcloud iam service-accounts describe "$email" --project="$project" \
            --format="value(email)"
    fi
done

# Project roles, each granted on its own (a grant is idempotent). Grants naming a new
# account are retried until IAM knows it.
grant_project_role() {
    retry "${conf[IAM_RETRY_ATTEMPTS]}" gcloud projects add-iam-policy-binding "$project" \
        --member="serviceAccount:$1" --role="$2" --condition=None --quiet --format=none
}
for role in ${conf[BUILD_ROLES]}; do grant_project_role "$build_sa" "$role"; done
for role in ${conf[DEPLOYER_ROLES]}; do grant_project_role "$(sa_email deployer)" "$role"; done

for fn in "${FUNCTIONS[@]}"; do
    for setting in $(secrets_of "$fn"); do
        retry "${conf[IAM_RETRY_ATTEMPTS]}" gcloud secrets add-iam-policy-binding "${conf[SECRET_$setting]}" \
            --project="$project" --member="serviceAccount:$(sa_email "$fn")" \
            --role=roles/secretmanager.secretAccessor --condition=None --quiet --format=none
    done
done

admin_secret=${conf[SECRET_ADMIN_DATABASE_URL]:-${conf[SECRET_DATABASE_URL]}}
admin_url="" # read from admin_secret only by the steps that need it

# --- 2. pg-boss's schema ------------------------------------------------------------------
# Before the functions, so new code never meets an old schema. The URL reaches pg-boss's
# CLI through its environment (PGBOSS_DATABASE_URL), never its command line.
if [[ ${conf[PGBOSS_MIGRATE]} == true ]]; then
    read_secret admin_url "$admin_secret"
    # The URL follows libpq's sslmode meaning, as the Python side does; node-postgres
    # reads sslmode=require as verify-full unless told to behave like libpq.
    node_url=$admin_url
    if [[ $node_url == *sslmode=* && $node_url != *uselibpqcompat=* ]]; then
        node_url+="&uselibpqcompat=true"
    fi
    show "PGBOSS_DATABASE_URL=$node_url" deploy/pgboss/pgboss migrate --schema "${conf[APP_PGBOSS_SCHEMA]}"
    $dry_run || PGBOSS_DATABASE_URL=$node_url deploy/pgboss/pgboss migrate --schema "${conf[APP_PGBOSS_SCHEMA]}"
else
    note "pg-boss migration skipped (PGBOSS_MIGRATE=false: the Node app owns pg-boss's schema)"
fi

# --- 3. the functions --------------------------------------------------------------------
for fn in "${FUNCTIONS[@]}"; do
    concurrency=$(size_of "$fn" CONCURRENCY)
    # GOOGLE_CLOUD_PROJECT names traces in logs. THREADS sizes functions-framework's
    # gunicorn to the concurrency Cloud Run sends, so requests never queue inside.
    env_vars=("GOOGLE_CLOUD_PROJECT=$project" "THREADS=$concurrency")
    for key in $(printf '%s\n' "${!conf[@]}" | grep '^APP_' | sort); do
        if [[ -n ${conf[$key]} ]] && settings_for "$fn" "${key#APP_}"; then
            env_vars+=("${key#APP_}=${conf[$key]}")
        fi
    done
    if [[ $fn == drain ]]; then
        # The timeout drain's calls plan against.
        timeout=$(size_of drain TIMEOUT)
        env_vars+=("DRAIN_TIMEOUT_SECONDS=${timeout%s}")
    fi
    if [[ ${ACCESS_OF[$fn]} == private ]]; then
        # Who may call it (drain's check, shared by supervise): the Scheduler's account,
        # with tokens minted for the function's own URL. Cloud Run IAM checks them first
        # (the function is private), so tokens it already verified are trusted too.
        env_vars+=("DRAIN_OIDC_AUDIENCES=$(function_url "$fn")"
            "DRAIN_OIDC_SERVICE_ACCOUNTS=$scheduler_sa" "DRAIN_OIDC_TRUST_CLOUD_RUN=true")
    fi
    secret_flags=()
    refs=()
    for setting in $(secrets_of "$fn"); do
        secret=${conf[SECRET_$setting]}
        if [[ ${conf[SECRET_MODE]} == set-secrets ]]; then
            refs+=("$setting=$secret:${conf[SECRET_VERSION]}")
        elif [[ ${conf[SECRET_VERSION]} == latest ]]; then
            env_vars+=("$setting=sm://$project/$secret")
        else
            env_vars+=("$setting=sm://$project/$secret#${conf[SECRET_VERSION]}")
        fi
    done
    if ((${#refs[@]})); then
        secret_flags=(--set-secrets="$(join_list "${refs[@]}")")
    else
        secret_flags=(--clear-secrets) # nothing bound that this function does not read
    fi
    # --no-allow-unauthenticated: never an allUsers binding (which the Domain Restricted
    # Sharing organization policy refuses); public functions are opened below instead.
    # --serve-all-traffic-latest-revision: after a rollback pinned traffic to an old
    # revision, the next deploy serves what it deployed again.
    retry "${conf[DEPLOY_ATTEMPTS]}" gcloud functions deploy "$fn" --gen2 --project="$project" --region="$region" \
        --runtime="${conf[RUNTIME]}" --entry-point="$fn" --trigger-http --source=. \
        --run-service-account="$(sa_email "$fn")" \
        --build-service-account="projects/$project/serviceAccounts/$build_sa" \
        --memory="$(size_of "$fn" MEMORY)" --cpu="$(size_of "$fn" CPU)" \
        --timeout="$(size_of "$fn" TIMEOUT)" \
        --min-instances="$(size_of "$fn" MIN_INSTANCES)" --max-instances="$(size_of "$fn" MAX_INSTANCES)" \
        --concurrency="$concurrency" \
        --set-env-vars="$(join_list "${env_vars[@]}")" "${secret_flags[@]}" \
        --no-allow-unauthenticated --ingress-settings=all \
        --serve-all-traffic-latest-revision --quiet
    # Who may call it, set on its Cloud Run service after every deploy: public functions
    # skip Cloud Run's invoker check (Cloud Run's supported way to be public), private
    # ones keep it, so only holders of roles/run.invoker get through.
    if [[ ${ACCESS_OF[$fn]} == public ]]; then
        invoker_flag=--no-invoker-iam-check
    else
        invoker_flag=--invoker-iam-check
    fi
    run gcloud run services update "$fn" --project="$project" --region="$region" "$invoker_flag" --quiet
done

# --- 4. drain's and supervise's caller: the Scheduler ------------------------------------------
for fn in "${SCHEDULED[@]}"; do
    url=$(function_url "$fn")
    show gcloud run services describe "$fn" --project="$project" --region="$region" --format=json
    if ! $dry_run; then
        # Captured first: grep -q would stop reading early and fail gcloud with SIGPIPE.
        service=$(gcloud run services describe "$fn" --project="$project" --region="$region" --format=json)
        [[ $service == *"$url"* ]] ||
            die "$fn does not answer to $url: is PROJECT_NUMBER (${conf[PROJECT_NUMBER]}) right for $project?"
    fi
    retry "${conf[IAM_RETRY_ATTEMPTS]}" gcloud run services add-iam-policy-binding "$fn" --project="$project" \
        --region="$region" --member="serviceAccount:$scheduler_sa" --role=roles/run.invoker --quiet --format=none

    job_flags=(
        --project="$project" --location="$region"
        --schedule="${conf[SCHEDULE]}" --time-zone="${conf[SCHEDULER_TIME_ZONE]}"
        --uri="$url" --http-method=POST
        --oidc-service-account-email="$scheduler_sa" --oidc-token-audience="$url"
        --attempt-deadline="${conf[SCHEDULER_ATTEMPT_DEADLINE]}"
        --max-retry-attempts="${conf[SCHEDULER_MAX_RETRY_ATTEMPTS]}"
        --min-backoff="${conf[SCHEDULER_MIN_BACKOFF]}" --max-backoff="${conf[SCHEDULER_MAX_BACKOFF]}"
        --max-doublings="${conf[SCHEDULER_MAX_DOUBLINGS]}"
        --description="Calls manda-processing $fn; overlapping calls are safe"
        --quiet
    )
    if [[ $fn == drain ]]; then job=${conf[SCHEDULER_JOB]}; else job=${conf[SUPERVISE_SCHEDULER_JOB]}; fi
    # Retried too: the job names the Scheduler's account, which may be new.
    if exists gcloud scheduler jobs describe "$job" --project="$project" --location="$region"; then
        retry "${conf[IAM_RETRY_ATTEMPTS]}" gcloud scheduler jobs update http "$job" "${job_flags[@]}"
    else
        retry "${conf[IAM_RETRY_ATTEMPTS]}" gcloud scheduler jobs create http "$job" "${job_flags[@]}"
    fi
done

# --- 5. Supabase's webhook triggers -------------------------------------------------------
# They watch the tables (and events) of the routes the webhook function is deployed with.
webhook_url=$(function_url webhook)
routes_file=${conf[APP_WEBHOOK_ROUTES_FILE]:-}
trigger_args=(-X -v ON_ERROR_STOP=1 -v "webhook_url=$webhook_url"
    -v "timeout_ms=${conf[WEBHOOK_TIMEOUT_MS]}" -v "secret_name=${conf[WEBHOOK_VAULT_SECRET]}")
if [[ ${conf[WEBHOOK_TRIGGERS]} == apply ]]; then
    [[ -n $routes_file ]] || die "WEBHOOK_TRIGGERS=apply needs APP_WEBHOOK_ROUTES_FILE (the triggers watch its tables)"
    read_secret admin_url "$admin_secret"
    routes=$(cat "$routes_file")
    mask "$routes" "<contents of $routes_file>"
    run psql "${trigger_args[@]}" -v "routes=$routes" -f deploy/supabase/webhook_triggers.sql "$admin_url"
else
    note "webhook triggers not applied (WEBHOOK_TRIGGERS=skip); to apply them:"
    note "  psql ${trigger_args[*]} -v routes=\"\$(cat ${routes_file:-ROUTES.json})\" -f deploy/supabase/webhook_triggers.sql \"\$ADMIN_DATABASE_URL\""
fi

note "done: $env_name; enqueue $(function_url enqueue) and jobs $(function_url jobs); webhook $webhook_url; drain $drain_url and supervise $(function_url supervise) (every minute via ${conf[SCHEDULER_JOB]} and ${conf[SUPERVISE_SCHEDULER_JOB]})"
