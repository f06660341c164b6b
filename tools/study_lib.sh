# Sourced by every study script after `cd` to the repository root (SSL: the ssl command).
#
# finetune_inits OUT NAME RECIPE CHECKPOINT SEEDS "INITS" [ssl finetune flags...]
#   One `ssl finetune` per init (pretrained, random, datadep, ...) over SEEDS, its runs named
#   OUT/NAME_<init>_s<seed>. An init whose last seed has finished is skipped without loading any data;
#   otherwise ssl finetune itself keeps the finished seeds and resumes an interrupted one, so a study
#   killed half-way continues where it stopped when it is run again.
finetune_inits() {
  local out=$1 name=$2 recipe=$3 ckpt=$4 seeds=$5 inits=$6 init
  shift 6
  for init in $inits; do
    [ -f "$out/${name}_${init}_s${seeds##*,}/metrics.json" ] || ${SSL:-.venv/bin/ssl} finetune --recipe "$recipe" \
      --init "$init" --checkpoint "$ckpt" --seeds "$seeds" --output-dir "$out" --name "$name" "$@"
  done
}
