// cross_entropy.cu
#include "common.cuh"
