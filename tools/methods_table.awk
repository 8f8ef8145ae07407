# The toys' compare tables (FILE per toy, given in order) as one markdown table: a row per method,
# a column per toy, each cell x_err (or, where x* is not a point, the gap to the optimal set).
FNR == 1 { toy[++nt] = FILENAME; sub(/.*\//, "", toy[nt]); sub(/\.txt$/, "", toy[nt]); next }
/^figure:/ { next }
{
    if (!($1 in seen)) { seen[$1] = 1; order[++nm] = $1 }
    v = $2 == "nan" ? $3 : $2
    if ($0 ~ /stopped:/) v = "stopped"
    cell[$1, nt] = v
}
END {
    printf "| method |"; for (t = 1; t <= nt; t++) printf " %s |", toy[t]; printf "\n|---|"
    for (t = 1; t <= nt; t++) printf "---|"; printf "\n"
    for (m = 1; m <= nm; m++) {
        printf "| `%s` |", order[m]
        for (t = 1; t <= nt; t++) printf " %s |", ((order[m], t) in cell) ? cell[order[m], t] : ""
        printf "\n"
    }
}
