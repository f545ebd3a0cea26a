source scripts/gpu-env.sh; step build
sm90a_build . build-gpu $OUT/build.log duality_tests || { grep -E 'error' -A3 $OUT/build.log | head -40; exit 1; }
T=build-gpu/tests/duality_tests
step fused; timeout 60 $T --gtest_filter='*OpRegistry*ssd_fused*' --gtest_brief=1 > $OUT/on.log 2>&1; echo rc $?; grep -E 'FAILED|PASSED' $OUT/on.log | head -20
step model; timeout 60 $T --gtest_filter='*Cuda*:-*OpRegistry*' --gtest_brief=1 > $OUT/model.log 2>&1; echo rc $?; grep -E 'FAILED|PASSED' $OUT/model.log | head -5
step timing; timeout 20 $T --gtest_also_run_disabled_tests --gtest_filter='SsdChunkedTiming.*' > $OUT/t.txt 2>&1; grep -E 'FUSED' $OUT/t.txt | cut -c1-75
step done
